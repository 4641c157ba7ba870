"""Greedy ensemble selection (Caruana et al. 2004): known answers, selection on validation rows only, and a run's
ensemble recomputed from predictions.csv and the weights it records."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

from runner.commands.cli import main
from runner.commands.predict import predict
from runner.ensemble.greedy import bagged_weights, greedy_weights
from runner.paths import bundled_data

pytestmark = pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")  # float sums, not 1 exactly
QUICK = ["eval=kfold", "eval.k=3", "trainer.seeds=3", "trainer.epochs=4", "ensemble=greedy", "ensemble.rounds=10",
         "trainer.progress=false", "plots=false"]


def _reference(values, y, rounds):
    """Caruana's selection as the paper states it, scored by sklearn's log loss: the weights (counts / rounds)."""
    chosen = []
    for _ in range(rounds):
        losses = [log_loss(y, values[chosen + [m]].mean(0), labels=range(values.shape[-1]))
                  for m in range(len(values))]
        chosen.append(int(np.argmin(losses)))
    return np.bincount(chosen, minlength=len(values)) / rounds


def test_greedy_weights_equal_the_papers_procedure_and_know_a_perfect_member():
    g = np.random.default_rng(0)
    values = g.dirichlet([1, 1, 1], size=(6, 40))  # 6 members, 40 rows, 3 classes
    y = g.integers(0, 3, 40)
    np.testing.assert_allclose(greedy_weights(values, y, 15), _reference(values, y, 15))
    values[4] = np.eye(3)[y] * 0.98 + 0.01  # a member right on every row, confidently: chosen every round
    assert greedy_weights(values, y, 7).tolist() == [0, 0, 0, 0, 1, 0]


def test_bagged_selection_averages_the_selections_of_random_halves():
    g = np.random.default_rng(2)
    values = g.dirichlet([1, 1], size=(7, 30))
    y = g.integers(0, 2, 30)
    rng = np.random.default_rng([0, 4])
    expected = np.zeros(7)
    for _ in range(5):
        half = np.sort(rng.choice(7, size=3, replace=False))
        expected[half] += _reference(values[half], y, 9) / 5
    got = bagged_weights(values, y, 9, 5, [0, 4])
    np.testing.assert_allclose(got, expected)
    assert got.sum() == pytest.approx(1) and np.count_nonzero(got) >= np.count_nonzero(greedy_weights(values, y, 9))
    np.testing.assert_array_equal(bagged_weights(values, y, 9, 1, [0, 4]), greedy_weights(values, y, 9))


def test_regression_selection_minimizes_squared_error_and_mixes_opposite_errors():
    y = np.linspace(0, 1, 20)
    values = np.stack([y + 1, y - 1, y + 3])[..., None]  # errors +1 and -1 cancel in an even mix
    w = greedy_weights(values, y, 10, regression=True)
    assert w.tolist() == [0.5, 0.5, 0.0]


def _run(tmp_path, name, *extra):
    run = tmp_path / name
    assert main(["train", *QUICK, *extra, f"hydra.run.dir={run}"]) == 0
    return run


def test_perturbing_a_folds_test_rows_changes_no_members_training_and_no_selection(tmp_path):
    # Heart with the features of fold 0's test rows replaced: fold 0's members, their validation predictions and
    # its selection are unchanged (they never read those rows); the other folds, which train on them, change.
    data = pd.read_csv(bundled_data("heart.csv"))
    original = tmp_path / "heart.csv"
    data.to_csv(original, index=False)
    first = _run(tmp_path, "a", f"dataset.path={original}")
    splits = json.loads((first / "split_indices.json").read_text())
    test0 = [s for s in splits if s["fold"] == 0][0]["test"]
    numeric = ["age", "trestbps", "chol", "thalch", "oldpeak"]
    changed = data.copy()
    changed.loc[test0, numeric] = changed.loc[test0, numeric].to_numpy()[::-1] * 3 + 7  # other values entirely
    perturbed = tmp_path / "perturbed.csv"
    changed.to_csv(perturbed, index=False)
    second = _run(tmp_path, "b", f"dataset.path={perturbed}")

    fold0 = [s["member"] for s in splits if s["fold"] == 0]
    others = [s["member"] for s in splits if s["fold"] != 0]
    a, b = (torch.load(r / "checkpoints" / "best.pt", weights_only=True)["flat"] for r in (first, second))
    torch.testing.assert_close(a[fold0], b[fold0], rtol=0, atol=0)
    assert not torch.equal(a[others], b[others])  # the perturbation did reach the folds that train on those rows
    va, vb = (pd.read_csv(r / "predictions.csv").query("split == 'val' and fold == 0") for r in (first, second))
    pd.testing.assert_frame_equal(va.reset_index(drop=True), vb.reset_index(drop=True))
    ea, eb = (json.loads((r / "ensemble.json").read_text())["folds"] for r in (first, second))
    assert ea[0] == eb[0] and ea[0]["fold"] == 0
    assert ea[1:] != eb[1:]  # the folds that trained on the changed rows chose otherwise


def test_the_ensemble_recomputes_from_predictions_csv_and_the_recorded_weights(tmp_path):
    run = _run(tmp_path, "run", "eval.baselines=[hgb]")
    results = json.loads((run / "results.json").read_text())
    record = json.loads((run / "ensemble.json").read_text())
    preds = pd.read_csv(run / "predictions.csv")
    assert record["selected_on"] == "val/log_loss" and record["rounds"] == 10 and len(record["folds"]) == 3
    accuracy, losses = [], []
    for chosen in record["folds"]:
        fold = preds[preds.fold == chosen["fold"]]
        val = fold[fold.split == "val"]
        members = sorted(val.member.unique())
        values = np.stack([val[val.member == m].sort_values("row")[["p_0", "p_1"]].to_numpy() for m in members])
        y = val[val.member == members[0]].sort_values("row").y_true.to_numpy()
        w = _reference(values, y, 10)  # the selection recomputes from the validation predictions
        assert chosen["members"] == [m for m, x in zip(members, w) if x] and chosen["weights"] == \
            pytest.approx([x for x in w if x])
        test = fold[fold.split == "test"]
        p1 = sum(x * test[test.member == m].sort_values("row").p_1.to_numpy()
                 for m, x in zip(chosen["members"], chosen["weights"]))
        truth = test[test.member == chosen["members"][0]].sort_values("row").y_true.to_numpy()
        accuracy.append(np.mean((p1 > 0.5) == truth))
        losses.append(log_loss(truth, p1, labels=[0, 1]))
    assert results["headline"]["name"] == "ensemble" and results["over"] == "3 folds"
    assert results["metrics"]["test/accuracy"]["mean"] == pytest.approx(np.mean(accuracy))
    assert results["metrics"]["test/log_loss"]["mean"] == pytest.approx(np.mean(losses))
    greedy = results["ensembles"]["greedy"]
    assert greedy["folds"] == record["folds"] and greedy["metrics"] == results["metrics"]
    assert set(greedy["vs"]) == {"best single", "each member"} and "hgb" in results["vs_baselines"]
    assert results["each_member"]["over"] == "3 folds, 3 seeds averaged per fold"

    # runner predict: the ensemble column is each split's weighted members, the splits averaged
    new = tmp_path / "new.csv"
    pd.read_csv(bundled_data("heart.csv")).head(7).to_csv(new, index=False)
    table = predict(run, new)
    expected = sum(x / 3 * table[f"m{m}.p_1"] for f in record["folds"] for m, x in zip(f["members"], f["weights"]))
    np.testing.assert_allclose(table["ensemble.p_1"], expected, rtol=1e-5)
