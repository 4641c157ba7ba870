"""Greedy ensemble selection with replacement (Caruana et al. 2004), within each split, on validation rows only.

Each split's ensemble starts empty; every round adds the member (again, if it is the best choice) whose
addition gives the lowest validation loss of the averaged probabilities (log loss; squared error for a
regression), so a member's weight is the share of rounds that chose it. The loss, not accuracy: on the few
validation rows of a small table many candidates tie on accuracy, and a proper score ranks every step.
Only validation predictions are read, each split's own: a split's ensemble never sees its test rows. The
chosen weights then combine the members' test predictions (linear: Σ w_m p_m).

On the few validation rows of a small table the selection overfits them (it picks two or three members that
happen to fit those rows). `bags` > 1 is the paper's bagged ensemble selection: the selection is run on `bags`
random halves of the members and the weights averaged, which spreads them over more members.
"""

import numpy as np
import pandas as pd

from runner.ensemble.combine import EPS, GROUP, fold_ensembles, stack
from runner.errors import RunnerError


def loss_name(classes) -> str:
    """The validation loss the selection minimizes: log_loss for classes, mse for a regression."""
    return "log_loss" if classes else "mse"


def greedy_weights(values: np.ndarray, y: np.ndarray, rounds: int, regression: bool = False) -> np.ndarray:
    """[M] weights (counts / rounds) chosen greedily with replacement for [M, n, C] validation probabilities (C = 1:
    regression values) and `y` (class codes, or the targets); ties go to the lowest index."""
    counts = np.zeros(len(values), dtype=int)
    total = np.zeros(values.shape[1:])
    for r in range(rounds):
        candidates = (total[None] + values) / (r + 1)  # [M, n, C]: the ensemble with each member added once more
        if regression:
            loss = ((candidates[..., 0] - y[None]) ** 2).mean(1)
        else:
            loss = -np.log(np.clip(candidates[:, np.arange(len(y)), y], EPS, 1)).mean(1)
        m = int(np.argmin(loss))
        counts[m] += 1
        total += values[m]
    return counts / rounds


def bagged_weights(values: np.ndarray, y: np.ndarray, rounds: int, bags: int, seed: int,
                   regression: bool = False) -> np.ndarray:
    """[M] the mean of `greedy_weights` over `bags` random halves of the members (one bag: all of them); the halves
    are drawn from the stream `seed`."""
    M = len(values)
    if bags <= 1:
        return greedy_weights(values, y, rounds, regression)
    rng = np.random.default_rng(seed)
    total = np.zeros(M)
    for _ in range(bags):
        half = np.sort(rng.choice(M, size=max(1, M // 2), replace=False))
        total[half] += greedy_weights(values[half], y, rounds, regression)
    return total / bags


def select(val: pd.DataFrame, classes: list[str] | None, rounds: int, bags: int = 1) -> list[dict]:
    """Each split's greedy selection from its validation predictions (predictions.csv's val rows): one record per
    split, in split order, {"repeat", "fold", "members": [member ids], "weights": [weights]} (chosen members only).
    With `bags` > 1, split (repeat, fold) draws its halves from the stream (repeat, fold)."""
    if val.empty:
        raise RunnerError("ensemble=greedy selects members on validation rows; this plan has none (set "
                          "eval.val_fraction > 0)")
    records = []
    for (repeat, fold), part in val.groupby(GROUP, sort=True):
        units, rows, values = stack(part, "member")
        truth = part[part["member"] == units[0]].sort_values("row")["y_true"]
        if classes:
            code = {c: i for i, c in enumerate(classes)}
            y = truth.astype(str).map(code).to_numpy()
        else:
            y = truth.to_numpy(float)
        w = bagged_weights(values, y, rounds, bags, [int(repeat), int(fold)], regression=not classes)
        chosen = np.flatnonzero(w)
        records.append({"repeat": int(repeat), "fold": int(fold), "members": [int(units[i]) for i in chosen],
                        "weights": [float(w[i]) for i in chosen]})
    return records


def ensemble_predictions(test: pd.DataFrame, records: list[dict], classes: list[str] | None) -> pd.DataFrame:
    """Each split's selected ensemble on its test rows: a predictions table with one `member` per split."""
    chosen = {(r["repeat"], r["fold"]): dict(zip(r["members"], r["weights"])) for r in records}
    test = test[test["member"].isin([m for r in records for m in r["members"]])]  # the others weigh 0
    weights = []
    for key, part in test.groupby(GROUP, sort=True):
        mine = chosen[tuple(int(k) for k in key)]
        weights.append(np.array([mine[int(m)] for m in sorted(part["member"].unique())]))
    return fold_ensembles(test, None, classes or [], "linear", weights)[0]


def ensemble_record(records: list[dict], rounds: int, bags: int, classes) -> dict:
    """ensemble.json: how the run's ensemble was chosen and, per split, its members and weights."""
    return {"method": "greedy", "rounds": rounds, "bags": bags, "selected_on": f"val/{loss_name(classes)}",
            "folds": records}
