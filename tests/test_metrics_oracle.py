"""The vectorized metrics equal scikit-learn, member by member, on random tables with ties, one-class
members, missing classes, one-row members and sample weights."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from runner.evaluate.metrics import member_scores, score, score_members


def oracle(task, y, pred, proba, classes, w) -> dict[str, float]:
    """scikit-learn's metrics on one member's rows, called as runner defines each metric."""
    if task == "regression":
        mse = skm.mean_squared_error(y, pred, sample_weight=w)
        return {"mse": mse, "rmse": np.sqrt(mse), "mae": skm.mean_absolute_error(y, pred, sample_weight=w),
                "r2": skm.r2_score(y, pred, sample_weight=w) if len(y) >= 2 else np.nan,
                "mean_error": np.average(pred - y, weights=w)}
    present = [k for k, c in enumerate(classes) if (y == c).any()]
    binary = task == "binary"
    avg = dict(average="binary", pos_label=classes[-1], labels=classes) if binary else dict(average="macro")
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, pred, zero_division=0, sample_weight=w, **avg)
    out = {"accuracy": skm.accuracy_score(y, pred, sample_weight=w),
           "balanced_accuracy": skm.balanced_accuracy_score(y, pred, sample_weight=w),
           "precision": precision, "recall": recall, "f1": f1}
    if len(present) < 2:
        out["roc_auc"] = np.nan
    elif binary:
        out["roc_auc"] = skm.roc_auc_score(y == classes[-1], proba[:, -1], sample_weight=w)
    elif len(present) == len(classes):
        out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes, sample_weight=w)
    else:  # sklearn's "ovr" refuses a missing class; runner averages over the classes present
        out["roc_auc"] = np.mean([skm.roc_auc_score(y == classes[k], proba[:, k], sample_weight=w) for k in present])
    out["log_loss"] = skm.log_loss(y, proba, labels=classes, sample_weight=w)
    if binary:
        out["brier"] = skm.brier_score_loss(y == classes[-1], proba[:, -1], sample_weight=w)
    else:
        out["brier"] = skm.brier_score_loss(y, proba, labels=classes, sample_weight=w, scale_by_half=False)
    return out


def random_table(task: str, seed: int, members: int = 12):
    """Members of 1..25 rows, interleaved; scores on a coarse grid (ties); some one-class members."""
    rng = np.random.default_rng(seed)
    classes = {"binary": ["neg", "pos"], "multiclass": ["a", "b", "c", "d"], "regression": None}[task]
    sizes = rng.integers(1, 26, members)
    sizes[:2] = [1, 2]
    g = rng.permutation(np.repeat(np.arange(members), sizes))
    n = len(g)
    if task == "regression":
        y = np.round(rng.normal(size=n), 1)
        y[g == 3] = 2.0  # a constant target: sklearn's R² is 0 (or 1 if predicted exactly)
        pred = np.round(y + rng.normal(scale=0.5, size=n), 1)
        return g, y, pred, None, classes
    K = len(classes)
    proba = np.round(rng.dirichlet(np.ones(K), size=n), 1) + 1e-3  # one decimal: many tied scores
    proba /= proba.sum(1, keepdims=True)
    codes = np.array([rng.choice(K, p=p) for p in proba])
    codes[g == 4] = 0  # a member whose test rows hold one class
    if K > 2:
        codes[(g == 5) & (codes == 2)] = 1  # a member missing a class
    y, pred = np.array(classes)[codes], np.array(classes)[proba.argmax(1)]
    return g, y, pred, proba, classes


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_of_every_member_equals_sklearn(task, seed, weighted):
    g, y, pred, proba, classes = random_table(task, seed)
    w = np.random.default_rng(seed + 10).uniform(0.2, 3.0, len(g)) if weighted else None
    M = g.max() + 1
    got = member_scores(task, g, M, y, pred, proba, classes, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on the one-class and one-row members we test on purpose
        for m in range(M):
            rows = g == m
            want = oracle(task, y[rows], pred[rows], None if proba is None else proba[rows], classes,
                          None if w is None else w[rows])
            assert {k: v[m] for k, v in got.items()} == pytest.approx(want, rel=1e-9, abs=1e-12, nan_ok=True), m


def test_score_members_reads_a_predictions_table_in_any_row_order():
    g, y, pred, proba, classes = random_table("multiclass", 7, members=6)
    table = pd.DataFrame({"member": g * 10 + 3, "y_true": y, "y_pred": pred})  # member ids need not be 0..M-1
    for k, c in enumerate(classes):
        table[f"p_{c}"] = proba[:, k]
    per = score_members(table, "multiclass", classes)
    assert list(per.index) == [3, 13, 23, 33, 43, 53]
    for m in range(6):
        rows = g == m
        assert per.loc[m * 10 + 3].to_dict() == pytest.approx(
            score("multiclass", y[rows], pred[rows], proba[rows], classes), nan_ok=True)


def test_known_values_by_hand():
    # AUC: positives score .8 and .5, negatives .5 and .2: pairs (.8>.5, .8>.2, .5=.5 half, .5>.2) = 3.5 / 4.
    got = score("binary", ["1", "1", "0", "0"], ["1", "0", "0", "0"], np.c_[[.2, .5, .5, .8], [.8, .5, .5, .2]],
                ["0", "1"])
    assert got["roc_auc"] == 0.875 and got["accuracy"] == 0.75 and got["recall"] == 0.5 and got["precision"] == 1.0
    # Weights: the right row weighs 3, the wrong one 1.
    assert score("binary", ["1", "0"], ["1", "1"], None, ["0", "1"], sample_weight=[3, 1])["accuracy"] == 0.75


def test_nan_probabilities_give_nan_auc_not_a_wrong_number():
    proba = np.c_[[0.3, np.nan, 0.6], [0.7, np.nan, 0.4]]
    got = score("binary", ["1", "0", "0"], ["1", "0", "0"], proba, ["0", "1"])
    assert np.isnan(got["roc_auc"]) and np.isnan(got["log_loss"]) and got["accuracy"] == 1.0


def test_a_label_outside_the_classes_is_an_error():
    with pytest.raises(ValueError, match="not among the classes"):
        score("binary", ["0", "2"], ["0", "1"], None, ["0", "1"])
