"""summarize (intervals over members or over test rows) and the baseline predictions it compares with."""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from runner.data.splits import Member
from runner.errors import RunnerError
from runner.evaluate.baselines import majority_predictions, sklearn_predictions
from runner.evaluate.metrics import per_example, prediction_arrays, score, score_members
from runner.evaluate.stats import inverse_root_scale, mean_ci, nadeau_bengio_se, t975, wilson
from runner.evaluate.headline import summarize

CLASSES = ["0", "1"]


def make_members(n_rows: int, k: int, repeats: int = 1, val: int = 4):
    """k-fold members (a stand-in for runner.data.splits.Member), `repeats` reshuffles."""
    members = []
    for r in range(repeats):
        order = np.random.default_rng(r).permutation(n_rows)
        for f, test in enumerate(np.array_split(order, k)):
            rest = np.setdiff1d(order, test)
            members.append(Member(index=len(members), fold=f, repeat=r, seed=0,
                                           train=rest[val:], val=rest[:val], test=np.sort(test)))
    return members


def make_predictions(members, y, seed=0, noise=0.25) -> pd.DataFrame:
    """A noisy binary model's predictions table for the members' test rows."""
    rng = np.random.default_rng(seed)
    parts = []
    for m in members:
        p = np.clip(0.25 + 0.5 * y[m.test] + rng.normal(0, noise, len(m.test)), 0.01, 0.99)
        parts.append(pd.DataFrame({"member": m.index, "fold": m.fold, "repeat": m.repeat, "seed": m.seed,
                                   "row": m.test, "y_true": y[m.test].astype(str),
                                   "y_pred": (p > 0.5).astype(int).astype(str), "p_0": 1 - p, "p_1": p}))
    return pd.concat(parts, ignore_index=True)


Y = (np.random.default_rng(42).uniform(size=60) < 0.45).astype(int)


def test_kfold_headline_is_over_folds():
    members = make_members(60, k=5)
    preds = make_predictions(members, Y)
    out = summarize(preds, "binary", CLASSES)
    per = score_members(preds, "binary", CLASSES)
    assert out["over"] == "5 folds" and out["baselines"] == {}
    assert set(out["metrics"]) == {f"test/{c}" for c in per.columns}
    rows = per_example("binary", *prediction_arrays(preds, "binary", CLASSES), CLASSES)
    for name in per.columns:
        d = out["metrics"][f"test/{name}"]
        assert d["mean"] == pytest.approx(per[name].mean()) and d["n"] == 5
        # the folds' SE (Nadeau–Bengio for a skewed loss: 48 training rows, 12 test), never under the rows' SE
        folds = per[name].std(ddof=1) / math.sqrt(5)
        if name == "log_loss":
            folds = nadeau_bengio_se(per[name], n_train=48, n_test=12)
        floor = mean_ci(rows[name])["se"] if name in rows else 0  # one seed: a row's values are its own
        assert d["se"] == pytest.approx(max(folds, floor))
        assert set(d.get("others", {})) == ({"folds"} if name == "log_loss" else set())  # the members are the folds
        assert 0 <= d["ci95"][0] <= d["ci95"][1] <= 1 or name == "log_loss"
    acc = out["metrics"]["test/accuracy"]
    n_eff = acc["mean"] * (1 - acc["mean"]) / acc["se"] ** 2
    # 5 fold scores: Wilson with Student's t quantile for 4 df in place of 1.96
    assert acc["ci95"] == pytest.approx(wilson(acc["mean"], n_eff, t975(4)))
    auc = out["metrics"]["test/roc_auc"]
    assert auc["ci95"] == pytest.approx(np.minimum(auc["mean"] + np.array([-1, 1]) * t975(4) * auc["se"], 1))
    assert auc["interval"] == "mean ± 2.78·SE, clipped to [0, 1] (Student's t, 4 df)"


def test_kfold_with_seeds_averages_seeds_within_each_fold():
    members = [dataclasses.replace(m, index=2 * m.index + s, seed=s) for m in make_members(60, k=5) for s in (0, 1)]
    preds = make_predictions(members, Y, noise=0.3)
    out = summarize(preds, "binary", CLASSES)
    assert out["over"] == "5 folds, 2 seeds averaged per fold"
    per = score_members(preds, "binary", CLASSES)
    folds = per.groupby(np.arange(10) // 2).mean()
    d = out["metrics"]["test/roc_auc"]
    assert d["n"] == 5 and d["se"] == pytest.approx(folds.roc_auc.std(ddof=1) / math.sqrt(5))
    members_ci = d["others"]["members"]
    assert members_ci["n"] == 10 and members_ci["se"] == pytest.approx(per.roc_auc.std(ddof=1) / math.sqrt(10))
    assert members_ci["over"].startswith("10 members (seeds of a fold share its test rows")


def test_holdout_seeds_headline_is_over_test_rows_of_the_seed_averaged_correctness():
    test = np.arange(40, 60)
    members = [Member(index=s, fold=0, repeat=0, seed=s, train=np.arange(36), val=np.arange(36, 40),
                               test=test) for s in range(5)]
    preds = make_predictions(members, Y, noise=0.3)
    out = summarize(preds, "binary", CLASSES, resamples=200)
    assert out["over"] == "20 test rows, 5 seeds averaged per row"
    ok = (preds.y_true == preds.y_pred).to_numpy(float).reshape(5, 20).mean(0)  # per row, over seeds
    acc = out["metrics"]["test/accuracy"]
    assert acc["n"] == 20 and acc["mean"] == pytest.approx(ok.mean())
    assert acc["se"] == pytest.approx(ok.std(ddof=1) / math.sqrt(20))
    assert acc["others"]["members"]["n"] == 5  # the seed spread, kept beside the headline
    # roc_auc: the bootstrap over rows of the seed-averaged AUC, each resample scored with sklearn
    rng = np.random.default_rng(0)
    tables = [preds[preds.member == s] for s in range(5)]
    reps = []
    for _ in range(200):
        i = np.bincount(rng.integers(0, 20, 20), minlength=20)
        rows = np.repeat(np.arange(20), i)
        reps.append(np.mean([roc_auc_score(t.y_true.to_numpy()[rows] == "1", t.p_1.to_numpy()[rows]) for t in tables]))
    auc = out["metrics"]["test/roc_auc"]
    assert auc["ci95"] == pytest.approx(np.percentile(reps, [2.5, 97.5]), abs=1e-12)
    assert auc["se"] == pytest.approx(np.std(reps, ddof=1)) and auc["sd"] is None


def test_single_member_interval_is_over_test_rows():
    members = make_members(60, k=5)[:1]
    preds = make_predictions(members, Y)
    out = summarize(preds, "binary", CLASSES)
    n_test = len(members[0].test)
    assert out["over"] == f"{n_test} test rows"
    z = per_example("binary", preds.y_true, preds.y_pred, preds[["p_0", "p_1"]].to_numpy(), CLASSES)["accuracy"]
    acc = out["metrics"]["test/accuracy"]
    assert acc["n"] == n_test and acc["mean"] == pytest.approx(z.mean())
    assert acc["se"] == pytest.approx(z.std(ddof=1) / math.sqrt(n_test))
    assert acc["ci95"] == pytest.approx(wilson(z.mean(), n_test - 1))  # 0/1 rows: Wilson, effective n = n - 1
    # Non-decomposable metrics: a seeded bootstrap, labelled, reproducible.
    auc = out["metrics"]["test/roc_auc"]
    assert auc["interval"].startswith("bootstrap percentile") and auc["se"] > 0
    assert summarize(preds, "binary", CLASSES)["metrics"]["test/roc_auc"] == auc


def test_repeated_kfold_headline_is_nadeau_bengio():
    members = make_members(60, k=5, repeats=2)
    preds = make_predictions(members, Y)
    out = summarize(preds, "binary", CLASSES)
    assert out["over"] == "5 folds x 2 repeats, Nadeau–Bengio corrected"
    d = out["metrics"]["test/log_loss"]
    per = score_members(preds, "binary", CLASSES)["log_loss"]
    # 60 rows, 12 per test fold; the 48 others are train (44) + val (4)
    assert d["se"] == pytest.approx(nadeau_bengio_se(per, n_train=48, n_test=12))
    assert d["n"] == 10 and d["interval"] == ("Nadeau–Bengio; inverse-root scale: mean/(1 ± 2.26·SE/(2·mean))² "
                                              "(Student's t, 9 df)")  # a skewed loss
    assert d["ci95"] == pytest.approx(inverse_root_scale(d["mean"], d["se"], t975(9)))
    folds = d["others"]["folds"]
    assert folds["se"] == pytest.approx(per.std(ddof=1) / math.sqrt(10)) and folds["se"] < d["se"]
    brier = out["metrics"]["test/brier"]
    per = score_members(preds, "binary", CLASSES)["brier"]
    assert brier["se"] == pytest.approx(nadeau_bengio_se(per, n_train=48, n_test=12))
    assert brier["interval"] == "Nadeau–Bengio; mean ± 2.26·SE (Student's t, 9 df)"
    assert brier["ci95"] == pytest.approx(brier["mean"] + np.array([-1, 1]) * t975(9) * brier["se"])


def test_one_class_fold_is_dropped_from_roc_auc_not_crashing():
    members = make_members(60, k=5)
    y = Y.copy()
    y[members[0].test] = 0  # fold 0 has only negatives: its AUC is undefined
    out = summarize(make_predictions(members, y), "binary", CLASSES)
    assert out["metrics"]["test/roc_auc"]["n"] == 4 and out["metrics"]["test/log_loss"]["n"] == 5


def test_majority_baseline_uses_train_rows_only():
    members = make_members(60, k=5)
    base = majority_predictions(Y, members, "binary", CLASSES)
    m = members[2]
    rows = base[base.member == 2]
    freq = np.bincount(Y[m.train], minlength=2) / len(m.train)
    assert list(rows.row) == list(m.test)
    assert rows[["p_0", "p_1"]].to_numpy() == pytest.approx(np.tile(freq, (len(m.test), 1)))
    flipped = Y.copy()
    flipped[m.test] = 1 - flipped[m.test]  # changing test labels must not change the prediction
    again = majority_predictions(flipped, [m], "binary", CLASSES)  # (they are other members' train rows)
    assert again[["p_0", "p_1", "y_pred"]].equals(rows[["p_0", "p_1", "y_pred"]].reset_index(drop=True))
    assert not again.y_true.equals(rows.y_true.reset_index(drop=True))
    reg = majority_predictions(Y * 2.5, members, "regression")
    assert reg[reg.member == 2].y_pred.iloc[0] == pytest.approx(np.mean(Y[m.train] * 2.5))


def test_sklearn_baseline_fits_each_member_on_its_train_rows():
    members = make_members(60, k=3)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 60, 4)) + Y[None, :, None]  # a different preprocessing per member
    got = sklearn_predictions("logreg", X, Y, members, "binary", CLASSES)
    m = members[1]
    want = LogisticRegression(max_iter=1000).fit(X[1][m.train], Y[m.train]).predict_proba(X[1][m.test])
    assert got[got.member == 1][["p_0", "p_1"]].to_numpy() == pytest.approx(want)
    knn = sklearn_predictions("knn", X, Y, members, "binary", CLASSES)
    assert set(np.round(knn.p_1 * 3)) <= {0, 1, 2, 3}  # 3 neighbours vote
    with pytest.raises(RunnerError, match="unknown baseline 'svm'; choose one of: majority, logreg, knn"):
        sklearn_predictions("svm", X, Y, members, "binary", CLASSES)


def test_baseline_missing_a_class_in_train_rows():
    y = np.array([0, 0, 1, 1, 0, 0, 2, 2, 1, 2])
    m = Member(index=0, fold=0, repeat=0, seed=0, train=np.arange(6), val=np.arange(0), test=np.arange(6, 10))
    X = np.random.default_rng(0).normal(size=(1, 10, 2))
    got = sklearn_predictions("logreg", X, y, [m], "multiclass", ["0", "1", "2"])
    assert (got.p_2 == 0).all() and got[["p_0", "p_1"]].sum(axis=1).to_numpy() == pytest.approx(1)
    base = summarize(got, "multiclass", ["0", "1", "2"])  # class 2 never predicted: still scores
    assert base["metrics"]["test/log_loss"]["mean"] > 1


def test_baselines_are_summarized_the_same_way():
    members = make_members(60, k=5)
    base = {"majority": majority_predictions(Y, members, "binary", CLASSES)}
    out = summarize(make_predictions(members, Y), "binary", CLASSES, base)
    maj = out["baselines"]["majority"]
    assert set(maj) == set(out["metrics"]) and maj["test/roc_auc"]["mean"] == 0.5
    assert maj["test/accuracy"]["mean"] < out["metrics"]["test/accuracy"]["mean"]


def test_evaluate_imports_neither_torch_nor_engine_nor_matplotlib():
    # Scoring is numpy: importing what scores, summarizes and reports loads no torch, sklearn, scipy,
    # matplotlib (plots import it when they draw) or tensorboard.
    code = ("import sys, runner.evaluate.metrics, runner.evaluate.headline, runner.evaluate.resample, "
            "runner.evaluate.report, runner.evaluate.compare, runner.evaluate.baselines, runner.evaluate.plots; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'matplotlib', 'sklearn', 'scipy', 'tensorboard') or m.startswith('runner.engine')]; "
            "print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _bootstrap_reference(task, y_true, y_pred, proba, classes, names, resamples=100):
    """The bootstrap as first written: sklearn's metrics (metrics.score) on each explicitly resampled test set."""
    rng = np.random.default_rng(0)
    reps = {name: [] for name in names}
    for _ in range(resamples):
        i = rng.integers(0, len(y_true), len(y_true))
        values = score(task, y_true[i], y_pred[i], None if proba is None else proba[i], classes, names)
        for name in names:
            reps[name].append(values[name])
    return {name: mean_ci(r)["sd"] for name, r in reps.items()}


def _one_member_table(seed, task, n, k=2):
    """A single member's predictions: scores rounded to 0.05 (many ties); multiclass has a rare class."""
    rng = np.random.default_rng(seed)
    if task == "regression":
        y = rng.normal(3.0, 2.0, n)
        return pd.DataFrame({"member": 0, "row": np.arange(n), "y_true": y, "y_pred": y + rng.normal(0, 1.0, n)}), None
    classes = [str(c) for c in range(k)]
    share = np.r_[0.06, np.full(k - 1, 0.94 / (k - 1))] if k > 2 else None  # class "0" rare
    y = rng.choice(k, n, p=share)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True) / 0.05) * 0.05
    proba = proba / proba.sum(1, keepdims=True)
    table = pd.DataFrame({"member": 0, "row": np.arange(n), "y_true": np.asarray(classes)[y],
                          "y_pred": np.asarray(classes)[proba.argmax(1)]})
    for c, column in zip(classes, proba.T):
        table[f"p_{c}"] = column
    return table, classes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task,n,k", [("binary", 61, 2), ("binary", 12, 2), ("multiclass", 40, 3),
                                      ("multiclass", 25, 4), ("regression", 33, None)])
def test_bootstrap_se_equals_the_per_resample_sklearn_loop(seed, task, n, k):
    table, classes = _one_member_table(seed, task, n, k)
    out = summarize(table, task, classes, resamples=100)["metrics"]
    boot = [name.split("/", 1)[1] for name, d in out.items() if d["interval"].startswith("bootstrap")]
    expected = {"regression": ["rmse", "r2"]}.get(task, ["balanced_accuracy", "precision", "recall", "f1", "roc_auc"])
    assert boot == expected
    want = _bootstrap_reference(task, *prediction_arrays(table, task, classes), classes, boot)
    for name in boot:
        got = out[f"test/{name}"]["se"]
        if want[name] is None:
            assert got is None, name
        else:  # the observed sd of the resampled values is the SE; no back-computed "sd"
            assert got == pytest.approx(want[name], rel=1e-12, abs=1e-15), name
            assert out[f"test/{name}"]["sd"] is None


def test_baselines_are_scored_once_per_split_not_once_per_seed():
    members = [Member(index=s, fold=0, repeat=0, seed=s, train=np.arange(40), val=np.arange(40, 45),
                               test=np.arange(45, 60)) for s in range(5)]
    base = majority_predictions(Y, members, "binary", CLASSES)
    assert base.member.unique().tolist() == [0] and len(base) == 15
    X = np.random.default_rng(0).normal(size=(5, 60, 3))
    assert sklearn_predictions("knn", X, Y, members, "binary", CLASSES).member.unique().tolist() == [0]
    acc = summarize(base, "binary", CLASSES)["metrics"]["test/accuracy"]
    # one deterministic prediction per test row: Wilson over the 15 rows, not a zero-width spread over 5 copies
    assert acc["n"] == 15 and acc["ci95"] == pytest.approx(wilson(acc["mean"], 14)) and acc["ci95"][1] > acc["ci95"][0]


def test_pooled_leave_one_out_majority_is_one_constant_score_with_auc_one_half():
    n = 30
    members = [Member(index=i, fold=i, repeat=0, seed=0, train=np.delete(np.arange(n), i)[3:],
                               val=np.delete(np.arange(n), i)[:3], test=np.array([i])) for i in range(n)]
    per_fold = majority_predictions(Y[:n], members, "binary", CLASSES)
    pooled = per_fold.assign(member=0)
    # each fold's training shares move against the row it leaves out: pooled, they rank rows
    assert summarize(pooled, "binary", CLASSES)["metrics"]["test/roc_auc"]["mean"] < 0.5
    constant = majority_predictions(Y[:n], members, "binary", CLASSES, constant=True).assign(member=0)
    assert constant.p_1.nunique() == 1 and constant.p_1.iloc[0] == pytest.approx(per_fold.p_1.mean())
    assert summarize(constant, "binary", CLASSES)["metrics"]["test/roc_auc"]["mean"] == 0.5


def test_a_table_of_many_predictions_per_model_gets_fewer_resamples(monkeypatch):
    from runner.evaluate import headline

    monkeypatch.setattr(headline, "BOOTSTRAP_BUDGET", 20 * 300)
    monkeypatch.setattr(headline, "MIN_RESAMPLES", 50)
    members = [Member(index=0, fold=0, repeat=0, seed=0, train=np.arange(30), val=np.arange(0),
                      test=np.arange(30, 60))] * 10  # one model predicting the same 30 rows 10 times
    preds = make_predictions(members, Y).assign(member=0)
    auc = summarize(preds, "binary", CLASSES)["metrics"]["test/roc_auc"]
    assert auc["interval"] == "bootstrap percentile (50 resamples of the test rows, seed 0)" and auc["n"] == 30


def test_overlapping_validation_sets_of_one_kfold_are_folds_not_repeats():
    members = make_members(60, k=5)
    val = [dataclasses.replace(m, test=np.sort(np.r_[m.val, m.test[:6]])) for m in members]  # sets overlap
    out = summarize(make_predictions(val, Y), "binary", CLASSES)
    assert out["over"] == "5 folds" and "Nadeau" not in out["metrics"]["test/brier"]["interval"]


def test_kfold_accuracy_is_never_narrower_than_its_test_rows_allow():
    # 5 folds of 20 rows scoring 16, 17, 16, 17, 16 right: the folds' SE 0.0122 would claim Wilson's effective
    # n = 0.82·0.18/0.0122² = 984 from 100 rows; floored at the rows' SE √(0.82·0.18·100/99)/10 it is 99.
    right = [16, 17, 16, 17, 16]
    correct = np.concatenate([np.arange(20) < r for r in right])
    p = np.where(correct, 0.9, 0.1)
    table = pd.DataFrame({"member": np.repeat(np.arange(5), 20), "fold": np.repeat(np.arange(5), 20), "repeat": 0,
                          "seed": 0, "row": np.arange(100), "y_true": "1", "y_pred": np.where(correct, "1", "0"),
                          "p_0": 1 - p, "p_1": p})
    acc = summarize(table, "binary", CLASSES)["metrics"]["test/accuracy"]
    se = math.sqrt(0.82 * 0.18 * 100 / 99) / 10
    assert acc["mean"] == pytest.approx(0.82) and acc["se"] == pytest.approx(se)
    assert acc["ci95"] == pytest.approx(wilson(0.82, 99, t975(4)))
    assert acc["interval"] == "SE floored at the 100 test rows' SE; Wilson, effective n = 99 (Student's t, 4 df)"
    assert acc["ci95"][1] - acc["ci95"][0] > 0.15  # not 0.82 ± 0.03


def test_kfold_r2_interval_is_that_of_one_minus_r2_on_the_inverse_root_scale():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(3)
    y = rng.normal(size=200) * 2
    table = pd.DataFrame({"member": np.repeat(np.arange(5), 40), "fold": np.repeat(np.arange(5), 40), "repeat": 0,
                          "seed": 0, "row": np.arange(200), "y_true": y, "y_pred": y + rng.normal(size=200)})
    r2 = summarize(table, "regression")["metrics"]["test/r2"]
    folds = np.array([r2_score(y[f * 40:(f + 1) * 40], table.y_pred[f * 40:(f + 1) * 40]) for f in range(5)])
    se = math.sqrt((1 / 5 + 40 / 160) * folds.var(ddof=1))  # Nadeau–Bengio: 40 test rows, 160 training
    loss, half = 1 - folds.mean(), t975(4) * se / (2 * (1 - folds.mean()))
    assert r2["mean"] == pytest.approx(folds.mean()) and r2["se"] == pytest.approx(se) and half < 0.75  # no cap
    assert r2["ci95"] == pytest.approx([1 - loss / (1 - half) ** 2, 1 - loss / (1 + half) ** 2])
    assert r2["interval"].startswith("Nadeau–Bengio; 1 − R² on the inverse-root scale")
