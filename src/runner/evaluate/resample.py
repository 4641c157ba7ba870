"""Bootstrap SEs of the metrics that are not means over rows, for all resamples at once.

A resample is a multiplicity vector over the test rows, so every metric becomes a weighted
statistic: confusion counts are W @ indicators, ROC AUC is the weighted Mann-Whitney statistic
(ties count 1/2), RMSE and R² weighted sums. Each value equals sklearn's metric on the explicitly
resampled arrays (tested), at a fraction of the cost of calling sklearn per resample.
"""

import numpy as np

from runner.evaluate.metrics import _labels, _normalized, _onehot
from runner.evaluate.stats import mean_ci


def bootstrap_se(task, y_true, y_pred, proba, classes, names, resamples: int) -> dict[str, float | None]:
    """SE of each metric in `names` as the sd of its value over seeded resamples of the test rows."""
    if not names or resamples < 2:
        return {name: None for name in names}
    values = resampled_metrics(task, y_true, y_pred, proba, classes, names, multiplicities(len(y_true), resamples))
    return {name: mean_ci(values[name])["sd"] for name in names}


def multiplicities(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """W [R, n]: how often each row appears in each resample (rows drawn with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype(float)


def resampled_metrics(task, y_true, y_pred, proba, classes, names, W: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric in `names`, one value per resample (row of W)."""
    if task == "regression":
        return _regression(np.asarray(y_true, float), np.asarray(y_pred, float), names, W)
    classes = [str(c) for c in classes]
    truth = _onehot(_labels(y_true), classes)
    guess = _onehot(_labels(y_pred), classes)
    support, predicted, hits = W @ truth, W @ guess, W @ (truth * guess)  # [R, K] each
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_k = np.where(support > 0, hits / support, 0.0)
        precision_k = np.where(predicted > 0, hits / predicted, 0.0)
        f1_k = np.where(support + predicted > 0, 2 * hits / (support + predicted), 0.0)
        present = support > 0
        out["balanced_accuracy"] = np.where(present, recall_k, 0).sum(1) / present.sum(1)
        if task == "binary":  # the positive class is the last one
            out["precision"], out["recall"], out["f1"] = precision_k[:, -1], recall_k[:, -1], f1_k[:, -1]
        else:  # macro over the labels present in y_true or y_pred, as sklearn without `labels`
            either = present | (predicted > 0)
            for name, per_class in (("precision", precision_k), ("recall", recall_k), ("f1", f1_k)):
                out[name] = np.where(either, per_class, 0).sum(1) / either.sum(1)
    if "roc_auc" in names and proba is not None:
        out["roc_auc"] = _roc_auc(task, truth, _normalized(proba), W)
    return {name: out[name] for name in names}


def _auc(scores: np.ndarray, positive: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC per resample; NaN where a resample lacks positives or negatives."""
    _, group = np.unique(scores, return_inverse=True)
    G = np.zeros((len(scores), group.max() + 1))
    G[np.arange(len(scores)), group] = 1.0  # rows with equal scores share a column (ties)
    pos, neg = W @ (G * positive[:, None]), W @ (G * (1 - positive)[:, None])  # [R, U], ascending scores
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _roc_auc(task, truth, proba, W) -> np.ndarray:
    # Mirrors metrics._roc_auc: binary on the last class; multiclass one-vs-rest macro over the
    # classes present in the resample; NaN when fewer than two classes are present.
    support = W @ truth
    enough = (support > 0).sum(1) >= 2
    if task == "binary":
        auc = _auc(proba[:, -1], truth[:, -1], W)
    else:
        per_class = np.stack([_auc(proba[:, k], truth[:, k], W) for k in range(truth.shape[1])], axis=1)
        present = support > 0
        auc = np.where(present, per_class, 0).sum(1) / present.sum(1)
    return np.where(enough, auc, np.nan)


def _regression(y_true, y_pred, names, W) -> dict[str, np.ndarray]:
    n = W.sum(1)
    ss_res = W @ (y_pred - y_true) ** 2
    mean = (W @ y_true) / n
    ss_tot = W @ y_true**2 - n * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    out = {"rmse": np.sqrt(ss_res / n), "r2": np.where(n >= 2, r2, np.nan)}
    return {name: out[name] for name in names}
