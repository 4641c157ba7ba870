"""Combining members' predictions: mean, vote, linear and log-linear (weights given or learned on validation).

A combination works on prediction tables (predictions.csv's format). With k-fold, each fold's ensemble is
formed from that fold's members (seeds, bags, dropout passes) and scored on that fold's test rows, so an
interval over the ensembles is over folds. Learned weights read validation predictions only.
"""

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp, softmax

from runner.errors import RunnerError

COMBINES = ("mean", "vote", "linear", "loglinear")
GROUP = ["repeat", "fold"]  # the members of one split: they share validation and test rows
EPS = 1e-12


def proba_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("p_")]


def stack(table: pd.DataFrame, unit: str = "member") -> tuple[list, np.ndarray, np.ndarray]:
    """One split's table as (units, rows, values [M, n, C]): each unit's probabilities (or regression values
    [M, n, 1]) on the same rows in the same order."""
    columns = proba_columns(table) or ["y_pred"]
    units = sorted(table[unit].unique())
    parts = [table[table[unit] == u].sort_values("row") for u in units]
    rows = parts[0]["row"].to_numpy()
    if any(len(p) != len(rows) or not np.array_equal(p["row"].to_numpy(), rows) for p in parts):
        raise ValueError("members of one split must be scored on the same rows")
    return units, rows, np.stack([p[columns].to_numpy(float) for p in parts])


def combine(values: np.ndarray, how: str, weights: np.ndarray | None = None, regression: bool = False) -> np.ndarray:
    """[M, n, C] member probabilities (C = 1: regression values) -> [n, C] the ensemble's.

    mean: the average; vote: each class's share of the members' votes; linear: Σ λ_m P_m (λ ≥ 0, Σ λ = 1);
    loglinear: softmax(Σ λ_m log P_m), renormalized (λ may be negative: a member can veto a class).
    """
    M = len(values)
    w = np.full(M, 1.0 / M) if weights is None else np.asarray(weights, float)
    if how in ("mean", "linear"):
        return np.tensordot(w, values, axes=1)
    if regression:
        raise RunnerError(f"ensemble.combine={how} needs class probabilities; a regression ensemble uses mean "
                          "or linear")
    if how == "vote":
        votes = np.eye(values.shape[-1])[values.argmax(-1)]  # [M, n, C] one-hot of each member's class
        return votes.mean(0)
    if how == "loglinear":
        return softmax(np.tensordot(w, np.log(np.clip(values, EPS, 1)), axes=1), axis=-1)
    raise RunnerError(f"ensemble.combine={how!r} is not one of {', '.join(COMBINES)}")


def learn_weights(values: np.ndarray, y: np.ndarray, how: str, regression: bool = False) -> np.ndarray:
    """λ minimizing the validation log loss (classification; y class codes) or squared error (regression).

    linear: λ = softmax(θ) (M-1 degrees of freedom, λ ≥ 0, Σ λ = 1); loglinear: λ free, starting from 1/M.
    """
    M = len(values)
    if M == 1:
        return np.ones(1)

    def loss(theta):
        lam = softmax(theta) if how == "linear" else theta
        if regression:
            return float(np.mean((np.tensordot(lam, values[..., 0], axes=1) - y) ** 2))
        if how == "linear":
            log_p = logsumexp(np.log(np.clip(values, EPS, 1)) + np.log(np.clip(lam, EPS, 1))[:, None, None], axis=0)
        else:
            log_p = log_softmax(np.tensordot(lam, np.log(np.clip(values, EPS, 1)), axes=1), axis=-1)
        return float(-np.mean(log_p[np.arange(len(y)), y]))

    start = np.zeros(M) if how == "linear" else np.full(M, 1.0 / M)
    theta = minimize(loss, start, method="L-BFGS-B").x
    return softmax(theta) if how == "linear" else theta


def fold_ensembles(test: pd.DataFrame, val: pd.DataFrame | None, classes: list[str], how: str,
                   weights=None, unit: str = "member") -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Each split's ensemble on its test rows, as a predictions table with one `member` per split; and the
    weights used in each split (given, learned on that split's validation rows, or uniform). `weights` is one
    list for every split, or a list of per-split arrays (in split order)."""
    parts, used = [], []
    learned = how in ("linear", "loglinear") and weights is None
    per_split = weights is not None and np.ndim(weights[0]) == 1
    for s, (key, part) in enumerate(test.groupby(GROUP, sort=True)):
        units, rows, values = stack(part, unit)
        w = None if weights is None else np.asarray(weights[s] if per_split else weights, float)
        if w is not None and len(w) != len(units):
            raise RunnerError(f"ensemble.weights has {len(w)} values; each split's ensemble has {len(units)} "
                              "members (give one weight per member, or null to learn them on validation)")
        if learned:
            if val is None or val.empty:
                raise RunnerError(f"ensemble.combine={how} learns its weights on validation rows; this plan has "
                                  "none (set eval.val_fraction > 0, or give ensemble.weights)")
            v_part = val[(val["repeat"] == key[0]) & (val["fold"] == key[1])]
            v_units, _, v_values = stack(v_part, unit)
            truth = v_part[v_part[unit] == v_units[0]].sort_values("row")["y_true"]
            code = {c: i for i, c in enumerate(classes)}
            y = truth.astype(str).map(code).to_numpy() if classes else truth.to_numpy(float)
            w = learn_weights(v_values, y, how, regression=not classes)
        used.append(np.full(len(units), 1.0 / len(units)) if w is None else w)
        combined = combine(values, how, w, regression=not classes)
        first = part[part[unit] == units[0]].sort_values("row")
        frame = first[[c for c in first.columns if not c.startswith("p_") and c != "y_pred"]].copy()
        frame["member"] = len(parts)
        frame = frame.drop(columns=[c for c in ("seed", "bag", "pass") if c in frame.columns])
        if classes:
            frame["y_pred"] = np.asarray(classes)[combined.argmax(-1)]
            for j, c in enumerate(classes):
                frame[f"p_{c}"] = combined[:, j]
        else:
            frame["y_pred"] = combined[:, 0]
        parts.append(frame)
    return pd.concat(parts, ignore_index=True), used
