"""Bootstrap resamples of the metrics that are not means over rows, a chunk of resamples at a time.

A resample is a multiplicity vector over the test rows, so every metric becomes a weighted
statistic: confusion counts are W @ indicators, ROC AUC is the weighted Mann-Whitney statistic
(ties count 1/2), RMSE and R² weighted sums. Each value equals sklearn's metric on the explicitly
resampled arrays (tested), at a fraction of the cost of calling sklearn per resample.
"""

import warnings

import numpy as np

from runner.evaluate.metrics import _labels, _normalized, _onehot, class_scores, r2_from_sums

# Resamples x rows held at once: every array the bootstrap builds is at most this many floats (32 MB),
# so its memory is linear in the rows however many resamples are asked for.
CHUNK_CELLS = 1 << 22


def multiplicities(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """W [R, n]: how often each row appears in each resample (rows drawn with replacement, seeded)."""
    return np.concatenate(list(multiplicity_chunks(n, resamples, seed)))


def multiplicity_chunks(n: int, resamples: int, seed: int = 0, width: int = 0):
    """The rows of `multiplicities(n, resamples, seed)`, a few at a time: chunk x max(n, width) <= CHUNK_CELLS.

    `width`: the columns each resample will be spread to (predictions, when a row was predicted many times).
    """
    rng = np.random.default_rng(seed)
    size = max(1, CHUNK_CELLS // max(n, width, 1))
    for first in range(0, resamples, size):
        count = min(size, resamples - first)
        yield np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(count)]).astype(float)


def seed_averaged(task, tables, classes, names, n_units: int, resamples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Each metric in `names` per bootstrap resample of n_units test rows, averaged over the models in `tables`.

    `tables` holds one (unit, y_true, y_pred, proba) per model: `unit[i]` is the resampled row (0..n_units-1)
    its prediction i belongs to, so the models (seeds) are scored on the same resampled rows, and a row
    predicted several times by one model (leave-one-out validation) is drawn as one.
    """
    out = {name: [] for name in names}
    width = max(len(unit) for unit, *_ in tables)
    for W in multiplicity_chunks(n_units, resamples, seed, width):
        per_model = [resampled_metrics(task, y_true, y_pred, proba, classes, names, W[:, unit])
                     for unit, y_true, y_pred, proba in tables]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample undefined for every model stays NaN
            for name in names:
                out[name].append(np.nanmean([values[name] for values in per_model], axis=0))
    return {name: np.concatenate(chunks) for name, chunks in out.items()}


def resampled_metrics(task, y_true, y_pred, proba, classes, names, W: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric in `names`, one value per resample (row of W)."""
    if task == "regression":
        return _regression(np.asarray(y_true, float), np.asarray(y_pred, float), names, W)
    classes = [str(c) for c in classes]
    truth = _onehot(_labels(y_true), classes)
    guess = _onehot(_labels(y_pred), classes)
    support, predicted, hits = W @ truth, W @ guess, W @ (truth * guess)  # [R, K] each
    out = class_scores(task, support, predicted, hits, support > 0, predicted > 0)  # a class no row drew is absent
    if "roc_auc" in names and proba is not None:
        out["roc_auc"] = _roc_auc(task, truth, _normalized(proba), W)
    return {name: out[name] for name in names}


def _auc(scores: np.ndarray, positive: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC per resample; NaN where a resample lacks positives or negatives."""
    # Rank-based: rows sorted by score once; running sums read at the last row of each tie group give
    # the group's positives and the negatives up to its end; a positive counts the negatives below
    # its group and half of those in it. Every array is at most W's shape [R, n].
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    Wo = W[:, order]
    pos = Wo * positive[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    pos_upto = np.cumsum(pos, axis=1)[:, last]
    neg_upto = np.cumsum(Wo - pos, axis=1)[:, last]  # counts: the sums and differences are exact
    pos_group = np.diff(pos_upto, axis=1, prepend=0)
    neg_group = np.diff(neg_upto, axis=1, prepend=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos_group * (neg_upto - 0.5 * neg_group)).sum(1) / (pos_upto[:, -1] * neg_upto[:, -1])


def _roc_auc(task, truth, proba, W) -> np.ndarray:
    # Mirrors roc_auc in metrics._classification: binary on the last class; multiclass one-vs-rest macro over the
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
    out = {"rmse": np.sqrt(ss_res / n), "r2": r2_from_sums(ss_res, ss_tot, n)}
    return {name: out[name] for name in names}
