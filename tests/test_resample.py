"""Vectorized bootstrap metrics equal sklearn's metrics on the explicitly resampled rows."""

import numpy as np
import pytest

from runner.evaluate.metrics import score
from runner.evaluate.resample import multiplicities, resampled_metrics


def _explicit(W):
    # Rebuild each resample's row list from its multiplicities.
    return [np.repeat(np.arange(W.shape[1]), W[r].astype(int)) for r in range(W.shape[0])]


def _classification(seed, k, n, rare=False):
    rng = np.random.default_rng(seed)
    classes = [str(c) for c in range(k)]
    p = np.array([0.05] + [0.95 / (k - 1)] * (k - 1)) if rare else None
    y = rng.choice(k, size=n, p=p)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # rounding makes ties
    proba = proba / proba.sum(1, keepdims=True)
    y_true = np.asarray(classes)[y]
    y_pred = np.asarray(classes)[proba.argmax(1)]
    return y_true, y_pred, proba, classes


@pytest.mark.parametrize("seed,k,n,rare", [(0, 2, 61, False), (1, 2, 15, True), (2, 3, 40, False), (3, 4, 25, True)])
def test_classification_resamples_equal_sklearn(seed, k, n, rare):
    y_true, y_pred, proba, classes = _classification(seed, k, n, rare)
    task = "binary" if k == 2 else "multiclass"
    names = ["balanced_accuracy", "precision", "recall", "f1", "roc_auc"]
    W = multiplicities(n, 30, seed=seed)
    fast = resampled_metrics(task, y_true, y_pred, proba, classes, names, W)
    for r, rows in enumerate(_explicit(W)):
        slow = score(task, y_true[rows], y_pred[rows], proba[rows], classes, names)
        for name in names:
            np.testing.assert_allclose(fast[name][r], slow[name], atol=1e-12, err_msg=f"{name} resample {r}")


def test_regression_resamples_equal_sklearn():
    rng = np.random.default_rng(5)
    y_true = rng.normal(size=33)
    y_pred = y_true + rng.normal(scale=0.5, size=33)
    W = multiplicities(33, 30)
    fast = resampled_metrics("regression", y_true, y_pred, None, None, ["rmse", "r2"], W)
    for r, rows in enumerate(_explicit(W)):
        slow = score("regression", y_true[rows], y_pred[rows], names=["rmse", "r2"])
        np.testing.assert_allclose([fast["rmse"][r], fast["r2"][r]], [slow["rmse"], slow["r2"]], atol=1e-12)


def test_resamples_are_the_seeded_draws():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 10, 10)
    W = multiplicities(10, 3)
    assert W.sum(1).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(W[0], np.bincount(first, minlength=10))
