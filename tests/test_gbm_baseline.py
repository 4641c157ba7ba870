"""Histogram gradient boosting as a baseline: scikit-learn's own model on each split's rows, stopping early on the
split's validation rows; the run minus each baseline paired on the same folds, recomputed from the files."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from runner.data.preprocess import preprocess
from runner.data.splits import Member
from runner.evaluate.baselines import sklearn_predictions
from runner.study import plan


@pytest.fixture(autouse=True)
def one_thread():
    """sklearn's own fits on one OpenMP thread, as runner fits a small table's (seconds, not a minute, on a busy
    machine); the fit is the same on any number of threads."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _members(n: int, k: int = 3):
    rows = np.arange(n)
    out = []
    for f in range(k):
        test = rows[f::k]
        rest = np.setdiff1d(rows, test)
        out.append(Member(index=f, fold=f, repeat=0, seed=0, train=rest[len(rest) // 4:], val=rest[:len(rest) // 4],
                          test=test))
    return out


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_hgb_equals_sklearn_fit_on_the_same_rows_stopping_on_the_validation_rows(task):
    g = np.random.default_rng(0)
    n = 240
    X = g.normal(size=(n, 5))
    signal = X[:, 0] + np.sin(2 * X[:, 1]) + 0.5 * g.normal(size=n)
    y = (signal > 0).astype(int) if task == "binary" else signal
    members = _members(n)
    got = sklearn_predictions("hgb", np.stack([X] * len(members)), y, members, task, ["0", "1"])
    for m in members:
        mine = got[got.member == m.index].sort_values("row")
        if task == "binary":
            est = HistGradientBoostingClassifier(early_stopping=True, random_state=0)
            est.fit(X[m.train], y[m.train], X_val=X[m.val], y_val=y[m.val])
            np.testing.assert_allclose(mine.p_1, est.predict_proba(X[m.test])[:, 1], rtol=1e-12)
        else:
            est = HistGradientBoostingRegressor(early_stopping=True, random_state=0)
            est.fit(X[m.train], y[m.train], X_val=X[m.val], y_val=y[m.val])
            np.testing.assert_allclose(mine.y_pred, est.predict(X[m.test]), rtol=1e-12)
        assert est.n_iter_ < est.max_iter  # it stopped on the validation rows, not at its default 100 rounds


def test_the_run_minus_hgb_recomputes_from_predictions_and_sklearn(tmp_path, train, compose):
    overrides = ["eval=kfold", "eval.k=4", "trainer.seeds=2", "trainer.epochs=3", "eval.baselines=[hgb]"]
    run = tmp_path / "run"
    status, out, _ = train(*overrides, "trainer.progress=false", "plots=false", f"hydra.run.dir={run}")
    assert status == 0 and "mlp minus each baseline" in out
    results = json.loads((run / "results.json").read_text())

    study = plan(compose(overrides))
    pre = preprocess(study.dataset, study.members)
    y = study.dataset.y
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    run_acc, hgb_acc = [], []
    for fold, part in preds.groupby("fold"):
        run_acc.append(np.mean([(p.y_true == p.y_pred).mean() for _, p in part.groupby("member")]))
        m = next(m for m in study.members if m.fold == fold)  # the fold's first seed: a baseline has none
        est = HistGradientBoostingClassifier(early_stopping=True, random_state=0)
        est.fit(pre[m.index][m.train], y[m.train], X_val=pre[m.index][m.val], y_val=y[m.val])
        hgb_acc.append((est.predict(pre[m.index][m.test]) == y[m.test]).mean())
    assert results["baselines"]["hgb"]["test/accuracy"]["mean"] == pytest.approx(np.mean(hgb_acc))

    d = np.array(run_acc) - np.array(hgb_acc)
    se = d.std(ddof=1) / np.sqrt(len(d))
    paired = results["vs_baselines"]["hgb"]["test/accuracy"]
    assert paired["mean"] == pytest.approx(d.mean()) and paired["n"] == 4 and paired["over"] == "4 folds"
    half = stats.t.ppf(0.975, 3) * se
    assert paired["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert paired["p"] == pytest.approx(2 * stats.t.sf(abs(d.mean() / se), 3), rel=1e-6)
    assert "hgb" in (run / "report.md").read_text().split("Paired differences")[1]
