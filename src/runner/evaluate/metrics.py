"""Test metrics from predictions: every metric for every member in one numpy pass over the member axis.

A predictions table is one flat array of rows; `g[i]` is the member of row i. Per-member counts and
sums are `np.bincount` over g (or over g·K + class), and ROC AUC is the weighted Mann–Whitney statistic
over one sort by (member, score), ties counting one half. scikit-learn is the oracle: each value
equals its metric on that member's rows (tests/test_metrics.py), without ~150 validated calls a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from runner.config.metric_names import CLASSIFICATION_METRICS, require_task

EPS = np.finfo(float).eps  # probabilities are clipped to [eps, 1 - eps] before the log, as sklearn's log_loss


def score(task: str, y_true, y_pred, proba=None, classes=None, names=None, sample_weight=None) -> dict[str, float]:
    """Metrics of `task` (all, or those in `names`) for one set of predictions; undefined ones are NaN."""
    values = member_scores(task, np.zeros(len(y_true), dtype=np.intp), 1, y_true, y_pred, proba, classes,
                           sample_weight)
    return {k: float(values[k][0]) for k in (values if names is None else names)}


def score_members(predictions: pd.DataFrame, task: str, classes=None) -> pd.DataFrame:
    """One row per member (index `member`), one column per metric, each scored on that member's test rows."""
    import pandas as pd  # here, not at import: `runner report` reads metrics without pandas

    ids, g = np.unique(predictions["member"].to_numpy(), return_inverse=True)
    values = member_scores(task, g, len(ids), *prediction_arrays(predictions, task, classes), classes)
    return pd.DataFrame(values, index=pd.Index(ids, name="member"))


def member_scores(task: str, g, members: int, y_true, y_pred, proba=None, classes=None,
                  sample_weight=None) -> dict[str, np.ndarray]:
    """Every metric of `task` for each of `members` groups of rows (row i belongs to group g[i]): {name: [members]}."""
    require_task(task)
    g = np.asarray(g, dtype=np.intp)
    w = np.ones(len(g)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    total = np.bincount(g, w, members)
    with np.errstate(invalid="ignore", divide="ignore"):
        if task == "regression":
            return _regression(g, members, w, total, np.asarray(y_true, float), np.asarray(y_pred, float))
        return _classification(task, g, members, w, total, y_true, y_pred, proba, [str(c) for c in classes])


def _regression(g, M, w, total, y_true, y_pred) -> dict[str, np.ndarray]:
    err = y_pred - y_true
    ss_res = np.bincount(g, w * err**2, M)
    mean = np.bincount(g, w * y_true, M) / total
    ss_tot = np.bincount(g, w * (y_true - mean[g]) ** 2, M)
    mse = ss_res / total
    return {"mse": mse, "rmse": np.sqrt(mse), "mae": np.bincount(g, w * np.abs(err), M) / total,
            "r2": r2_from_sums(ss_res, ss_tot, np.bincount(g, minlength=M)),
            "mean_error": np.bincount(g, w * err, M) / total}


def r2_from_sums(ss_res: np.ndarray, ss_tot: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """sklearn's r2_score from each group's residual and total sums of squares: NaN below two rows; a constant
    target (ss_tot = 0) scores 1 if predicted exactly, else 0."""
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
    return np.where(rows >= 2, r2, np.nan)


def _classification(task, g, M, w, total, y_true, y_pred, proba, classes) -> dict[str, np.ndarray]:
    K = len(classes)
    t, p = _codes(_labels(y_true), classes), _codes(_labels(y_pred), classes)
    cell = g * K + t
    support = np.bincount(cell, w, M * K).reshape(M, K)  # weighted rows of each true class
    predicted = np.bincount(g * K + p, w, M * K).reshape(M, K)
    hit = t == p
    hits = np.bincount(cell[hit], w[hit], M * K).reshape(M, K)
    # A class is present if a row has it, whatever its weight (sklearn's unique_labels).
    in_true = np.bincount(cell, minlength=M * K).reshape(M, K) > 0
    in_pred = np.bincount(g * K + p, minlength=M * K).reshape(M, K) > 0
    out = {"accuracy": hits.sum(1) / total, **class_scores(task, support, predicted, hits, in_true, in_pred)}
    if proba is None:
        return out
    proba = _normalized(proba)
    rows = np.arange(len(t))
    if task == "binary":
        out["roc_auc"] = _auc(g, M, w, proba[:, -1], t == K - 1)
    else:
        # One-vs-rest macro over the classes present: sklearn's multi_class="ovr" when all are
        # present, and still defined (sklearn gives NaN) when a fold lacks a class.
        per_class = np.stack([_auc(g, M, w, proba[:, k], t == k) for k in range(K)], axis=1)
        out["roc_auc"] = np.where(in_true, per_class, 0).sum(1) / in_true.sum(1)
    out["roc_auc"] = np.where(in_true.sum(1) >= 2, out["roc_auc"], np.nan)  # needs a positive and a negative
    out["log_loss"] = np.bincount(g, w * -np.log(np.clip(proba[rows, t], EPS, 1 - EPS)), M) / total
    if task == "binary":
        sq = (proba[:, -1] - (t == K - 1)) ** 2
    else:
        sq = ((proba - _onehot_codes(t, K)) ** 2).sum(axis=1)
    out["brier"] = np.bincount(g, w * sq, M) / total
    return {name: out[name] for name in CLASSIFICATION_METRICS if name in out}


def class_scores(task: str, support, predicted, hits, in_true, in_pred) -> dict[str, np.ndarray]:
    """Balanced accuracy, precision, recall and F1 of each group (row) from its per-class counts [G, K]: (weighted)
    rows of each true class, of each predicted class, and hits; `in_true`, `in_pred` [G, K]: the classes present
    in y_true, in y_pred. Binary scores the last class; multiclass is the macro mean over the classes present in
    either, as sklearn without `labels`; a class with no rows scores 0 (zero_division=0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_k = np.where(support > 0, hits / support, 0.0)
        precision_k = np.where(predicted > 0, hits / predicted, 0.0)
        f1_k = np.where(support + predicted > 0, 2 * hits / (support + predicted), 0.0)
        # sklearn's balanced accuracy: mean recall over the classes with (weighted) rows in y_true.
        out = {"balanced_accuracy": np.where(support > 0, recall_k, 0).sum(1) / (support > 0).sum(1)}
        if task == "binary":  # the positive class is the last one ("1" of "0"/"1")
            out.update(precision=precision_k[:, -1], recall=recall_k[:, -1], f1=f1_k[:, -1])
        else:
            either = in_true | in_pred
            for name, per_class in (("precision", precision_k), ("recall", recall_k), ("f1", f1_k)):
                out[name] = np.where(either, per_class, 0).sum(1) / either.sum(1)
    return out


def _auc(g, M, w, scores, positive) -> np.ndarray:
    """Per group: P(score of a positive > score of a negative) + ½ P(tie), weighted; NaN without both."""
    order = np.lexsort((scores, g))
    gs, s = g[order], scores[order]
    pos_w, neg_w = np.where(positive, w, 0.0)[order], np.where(positive, 0.0, w)[order]
    # Runs of equal (group, score) are ties: sum each run's positive and negative weight.
    new = np.r_[True, (gs[1:] != gs[:-1]) | (s[1:] != s[:-1])] if len(s) else np.zeros(0, bool)
    run = np.cumsum(new) - 1
    pos, neg, run_g = np.bincount(run, pos_w), np.bincount(run, neg_w), gs[new]
    below = np.cumsum(neg) - neg  # negative weight before each run, counted from the first group
    first = np.r_[True, run_g[1:] != run_g[:-1]] if len(run_g) else np.zeros(0, bool)
    below -= below[np.maximum.accumulate(np.where(first, np.arange(len(run_g)), 0))]  # ... from its own group
    wins = np.bincount(run_g, pos * (below + 0.5 * neg), M)
    auc = wins / (np.bincount(run_g, pos, M) * np.bincount(run_g, neg, M))
    return np.where(np.bincount(g, np.isnan(scores), M) > 0, np.nan, auc)  # NaN scores do not rank


def per_example(task: str, y_true, y_pred, proba=None, classes=None) -> dict[str, np.ndarray]:
    """Per-row values Z_i whose mean is the metric, for the decomposable metrics of `task`."""
    require_task(task)
    if task == "regression":
        err = np.asarray(y_pred, float) - np.asarray(y_true, float)
        return {"mse": err**2, "mae": np.abs(err), "mean_error": err}
    classes = [str(c) for c in classes]
    y_true = _labels(y_true)
    out = {"accuracy": (y_true == _labels(y_pred)).astype(float)}
    if proba is not None:
        proba = _normalized(proba)
        t = _codes(y_true, classes)
        out["log_loss"] = -np.log(np.clip(proba[np.arange(len(t)), t], EPS, 1 - EPS))
        if task == "binary":
            out["brier"] = (proba[:, -1] - (t == len(classes) - 1)) ** 2
        else:
            out["brier"] = ((proba - _onehot_codes(t, len(classes))) ** 2).sum(axis=1)
    return out


def confusion(y_true, y_pred, classes, normalize: bool = False) -> pd.DataFrame:
    """Confusion matrix (rows: true class, columns: predicted); `normalize` divides each row by its count."""
    import pandas as pd

    classes = [str(c) for c in classes]
    K = len(classes)
    cells = _codes(_labels(y_true), classes) * K + _codes(_labels(y_pred), classes)
    counts = np.bincount(cells, minlength=K * K).reshape(K, K)
    values = counts.astype(float)
    if normalize:
        with np.errstate(invalid="ignore"):
            values = values / values.sum(axis=1, keepdims=True)  # a class absent from y_true: NaN row
    frame = pd.DataFrame(values if normalize else counts, index=classes, columns=classes)
    frame.index.name, frame.columns.name = "true", "predicted"
    return frame


def proba_columns(classes) -> list[str]:
    """The probability column names of a predictions table: p_<class> in `classes` order."""
    return [f"p_{c}" for c in classes]


def prediction_arrays(predictions: pd.DataFrame, task: str, classes):
    """y_true, y_pred and proba (or None) of a predictions table."""
    if task == "regression":
        return predictions["y_true"].to_numpy(float), predictions["y_pred"].to_numpy(float), None
    cols = proba_columns(classes)
    proba = predictions[cols].to_numpy(float) if all(c in predictions for c in cols) else None
    return _labels(predictions["y_true"]), _labels(predictions["y_pred"]), proba


def _labels(y) -> np.ndarray:
    # A predictions.csv read back parses "0"/"1" as integers; labels are compared as strings.
    return np.asarray(y).astype(str)


def _codes(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each label's position in `classes`; a label outside them is a caller's bug."""
    names = np.asarray(classes, dtype=str)
    order = np.argsort(names)
    at = np.minimum(np.searchsorted(names[order], labels), len(names) - 1)
    found = names[order][at] == labels
    if not found.all():
        raise ValueError(f"labels {sorted(set(labels[~found]))[:5]} are not among the classes {classes}")
    return order[at]


def _normalized(proba) -> np.ndarray:
    # Probabilities round-tripped through CSV sum to 1 only approximately; sklearn warns on that.
    # Rows already summing to 1 are left alone: dividing would perturb ties and so the AUC.
    p = np.asarray(proba, dtype=float)
    sums = p.sum(axis=1, keepdims=True)
    return p if np.allclose(sums, 1.0, rtol=0, atol=1e-9) else p / sums


def _onehot_codes(t: np.ndarray, K: int) -> np.ndarray:
    return (t[:, None] == np.arange(K)[None, :]).astype(float)


def _onehot(y_true, classes) -> np.ndarray:
    """[n, K] indicator of each row's true class (labels as strings)."""
    return _onehot_codes(_codes(_labels(y_true), [str(c) for c in classes]), len(classes))
