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


def test_chunked_draws_equal_one_draw_and_the_auc_bootstrap_is_linear_in_rows(monkeypatch):
    import tracemalloc

    from runner.evaluate import resample

    y_true, y_pred, proba, classes = _classification(7, 2, 500)
    unit = np.arange(500)
    whole = resample.seed_averaged("binary", [(unit, y_true, y_pred, proba)], classes, ["roc_auc"], 500, 40)
    monkeypatch.setattr(resample, "CHUNK_CELLS", 3 * 500)  # 3 resamples per chunk, same seeded stream
    chunked = resample.seed_averaged("binary", [(unit, y_true, y_pred, proba)], classes, ["roc_auc"], 500, 40)
    np.testing.assert_array_equal(whole["roc_auc"], chunked["roc_auc"])
    monkeypatch.undo()
    # 200k rows, all scores distinct: a rows x distinct-scores matrix would need 320 GB
    n = 200_000
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0, 1)
    table = (np.arange(n), y.astype(str), (p > 0.5).astype(int).astype(str), np.c_[1 - p, p])
    tracemalloc.start()
    out = resample.seed_averaged("binary", [table], ["0", "1"], ["roc_auc"], n, 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 400 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert np.all((out["roc_auc"] > 0.8) & (out["roc_auc"] < 1))


def test_chunks_are_sized_by_the_predictions_a_resample_is_spread_to(monkeypatch):
    from runner.evaluate import resample

    shapes = []
    real = resample.resampled_metrics
    monkeypatch.setattr(resample, "resampled_metrics", lambda *a: (shapes.append(a[-1].shape), real(*a))[1])
    monkeypatch.setattr(resample, "CHUNK_CELLS", 10_000)
    # 20 rows, each predicted 100 times (leave-one-out validation): 2,000 columns per resample
    y_true, y_pred, proba, classes = _classification(3, 2, 2000)
    unit = np.repeat(np.arange(20), 100)
    resample.seed_averaged("binary", [(unit, y_true, y_pred, proba)], classes, ["roc_auc"], 20, 30)
    assert max(r * c for r, c in shapes) <= 10_000 and sum(r for r, _ in shapes) == 30
