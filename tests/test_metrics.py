"""Metrics equal sklearn on fixed predictions; per-example values average to the metric."""

import io

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from runner.errors import RunnerError
from runner.config.metric_names import default_metric, higher_is_better
from runner.evaluate.metrics import (
    confusion,
    per_example,
    score,
    score_members,
)

BIN = ["0", "1"]
Y_BIN = np.array(["0", "1", "1", "0", "1", "0", "0", "1", "1", "0"])
P1 = np.array([0.2, 0.9, 0.4, 0.3, 0.8, 0.6, 0.1, 0.7, 0.55, 0.45])
PROBA_BIN = np.c_[1 - P1, P1]
PRED_BIN = np.where(P1 > 0.5, "1", "0")

MC = ["a", "b", "c"]
Y_MC = np.array(["a", "b", "c", "a", "b", "c", "a", "c", "b", "a"])
PROBA_MC = np.array([[.7, .2, .1], [.1, .6, .3], [.2, .3, .5], [.4, .4, .2], [.3, .3, .4],
                     [.1, .2, .7], [.5, .1, .4], [.3, .4, .3], [.2, .7, .1], [.6, .3, .1]])
PRED_MC = np.array(MC)[PROBA_MC.argmax(axis=1)]


def test_binary_equals_sklearn():
    got = score("binary", Y_BIN, PRED_BIN, PROBA_BIN, BIN)
    yb = Y_BIN == "1"
    want = {
        "accuracy": skm.accuracy_score(Y_BIN, PRED_BIN),
        "balanced_accuracy": skm.balanced_accuracy_score(Y_BIN, PRED_BIN),
        "precision": skm.precision_score(Y_BIN, PRED_BIN, pos_label="1"),
        "recall": skm.recall_score(Y_BIN, PRED_BIN, pos_label="1"),
        "f1": skm.f1_score(Y_BIN, PRED_BIN, pos_label="1"),
        "roc_auc": skm.roc_auc_score(yb, P1),
        "log_loss": skm.log_loss(Y_BIN, PROBA_BIN),
        "brier": skm.brier_score_loss(yb, P1),
    }
    assert got == pytest.approx(want, abs=1e-12)
    assert got["accuracy"] == 0.8 and got["precision"] == 0.8  # by hand: 8 of 10; 4 of 5 predicted "1"


def test_multiclass_equals_sklearn():
    got = score("multiclass", Y_MC, PRED_MC, PROBA_MC, MC)
    onehot = (Y_MC[:, None] == np.array(MC)).astype(float)
    want = {
        "accuracy": skm.accuracy_score(Y_MC, PRED_MC),
        "balanced_accuracy": skm.balanced_accuracy_score(Y_MC, PRED_MC),
        "precision": skm.precision_score(Y_MC, PRED_MC, average="macro"),
        "recall": skm.recall_score(Y_MC, PRED_MC, average="macro"),
        "f1": skm.f1_score(Y_MC, PRED_MC, average="macro"),
        "roc_auc": skm.roc_auc_score(Y_MC, PROBA_MC, multi_class="ovr", average="macro", labels=MC),
        "log_loss": skm.log_loss(Y_MC, PROBA_MC, labels=MC),
        "brier": np.mean(((PROBA_MC - onehot) ** 2).sum(axis=1)),
    }
    assert got == pytest.approx(want, abs=1e-12)


def test_regression_equals_sklearn():
    y = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
    p = np.array([2.5, 0.0, 2.0, 8.0, 3.0])
    got = score("regression", y, p)
    mse = skm.mean_squared_error(y, p)
    want = {"mse": mse, "rmse": np.sqrt(mse), "mae": skm.mean_absolute_error(y, p),
            "r2": skm.r2_score(y, p), "mean_error": np.mean(p - y)}
    assert got == pytest.approx(want, abs=1e-12)
    assert got["mean_error"] == pytest.approx(-0.04)  # (-0.5 + 0.5 + 0 + 1 - 1.2) / 5


def test_binary_fold_with_one_class_scores_without_crashing():
    y = np.array(["0", "0", "0"])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    got = score("binary", y, np.array(["0", "0", "1"]), proba, BIN)
    assert np.isnan(got["roc_auc"])
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=BIN))
    assert got["precision"] == 0.0 and got["accuracy"] == pytest.approx(2 / 3)


def test_multiclass_fold_missing_a_class():
    keep = Y_MC != "c"
    got = score("multiclass", Y_MC[keep], PRED_MC[keep], PROBA_MC[keep], MC)
    assert got["log_loss"] == pytest.approx(skm.log_loss(Y_MC[keep], PROBA_MC[keep], labels=MC))
    # One-vs-rest over the classes present, where sklearn's "ovr" would give NaN.
    present = [skm.roc_auc_score(Y_MC[keep] == c, PROBA_MC[keep][:, i]) for i, c in enumerate("ab")]
    assert got["roc_auc"] == pytest.approx(np.mean(present))


@pytest.mark.parametrize("task, y, pred, proba, classes", [
    ("binary", Y_BIN, PRED_BIN, PROBA_BIN, BIN),
    ("multiclass", Y_MC, PRED_MC, PROBA_MC, MC),
    ("regression", P1 * 3, P1 * 2 + 0.3, None, None),
])
def test_per_example_values_average_to_the_metric(task, y, pred, proba, classes):
    whole = score(task, y, pred, proba, classes)
    z = per_example(task, y, pred, proba, classes)
    assert set(z) == ({"mse", "mae", "mean_error"} if task == "regression" else {"accuracy", "log_loss", "brier"})
    for name, values in z.items():
        assert len(values) == len(y)
        assert values.mean() == pytest.approx(whole[name], abs=1e-12), name


def test_probabilities_off_by_rounding_are_renormalized():
    rounded = np.round(PROBA_MC * 0.999, 3)  # rows sum to ~0.999, as after a lossy CSV
    assert score("multiclass", Y_MC, PRED_MC, rounded, MC)["log_loss"] == pytest.approx(
        skm.log_loss(Y_MC, rounded / rounded.sum(axis=1, keepdims=True), labels=MC))


def test_confusion_counts_and_row_normalised():
    counts = confusion(Y_MC, PRED_MC, MC)
    assert (counts.to_numpy() == skm.confusion_matrix(Y_MC, PRED_MC, labels=MC)).all()
    rows = confusion(Y_MC, PRED_MC, MC, normalize=True)
    assert rows.to_numpy() == pytest.approx(skm.confusion_matrix(Y_MC, PRED_MC, labels=MC, normalize="true"))
    assert list(rows.index) == MC and rows.index.name == "true"


def test_direction_and_defaults():
    assert higher_is_better("accuracy") and higher_is_better("test/roc_auc") and higher_is_better("r2")
    assert not higher_is_better("log_loss") and not higher_is_better("val/loss") and not higher_is_better("rmse")
    assert default_metric("binary") == "accuracy" and default_metric("regression") == "rmse"
    with pytest.raises(RunnerError, match="unknown metric 'acc'.*accuracy"):
        higher_is_better("acc")
    with pytest.raises(RunnerError, match="unknown task"):
        default_metric("ranking")


def _table(members: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 12
    frames = []
    for m in range(members):
        p = rng.uniform(size=n)
        frames.append(pd.DataFrame({"member": m, "fold": m, "repeat": 0, "seed": 0, "row": np.arange(n),
                                    "y_true": (rng.uniform(size=n) < p).astype(int).astype(str),
                                    "y_pred": (p > 0.5).astype(int).astype(str), "p_0": 1 - p, "p_1": p}))
    return pd.concat(frames, ignore_index=True)


def test_score_members_one_row_per_member_and_survives_csv():
    table = _table(3)
    per = score_members(table, "binary", BIN)
    assert list(per.index) == [0, 1, 2] and list(per.columns)[0] == "accuracy"
    g = table[table.member == 1]
    assert per.loc[1].to_dict() == pytest.approx(
        score("binary", g.y_true, g.y_pred, g[["p_0", "p_1"]].to_numpy(), BIN))
    # read back, "0"/"1" become integers; the scores must not change
    again = score_members(pd.read_csv(io.StringIO(table.to_csv(index=False))), "binary", [0, 1])
    assert again.to_numpy() == pytest.approx(per.to_numpy())


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_metric_computed_has_its_row_in_the_table_and_every_row_is_computed(task):
    """A metric is its computation (evaluate/metrics.py) and its row (config/metric_names.py): neither alone."""
    from runner.config.metric_names import metric, metric_names

    rng = np.random.default_rng(0)
    classes = {"binary": ["a", "b"], "multiclass": ["a", "b", "c"]}.get(task)
    if classes is None:
        y, pred, proba = rng.normal(size=30), rng.normal(size=30), None
    else:
        proba = rng.dirichlet(np.ones(len(classes)), 30)
        y, pred = np.array(classes)[rng.integers(0, len(classes), 30)], np.array(classes)[proba.argmax(1)]
    computed = score(task, y, pred, proba, classes)
    assert tuple(computed) == metric_names(task)  # in report order
    for name, value in computed.items():
        low, high = metric(name).low, metric(name).high_multiclass or metric(name).high
        assert low <= value <= high, name
