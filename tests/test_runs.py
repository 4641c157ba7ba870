"""Whole runs: k-fold, refit and leave-one-out results recomputed from the files they write."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from runner.commands.cli import main

QUICK = ["trainer.epochs=8", "trainer.progress=false"]


def _run(tmp_path, *overrides):
    run = tmp_path / "run"
    assert main(["train", *QUICK, *overrides, f"hydra.run.dir={run}"]) == 0
    return run, json.loads((run / "results.json").read_text())


def test_kfold_results_equal_recomputation_from_predictions(tmp_path):
    run, results = _run(tmp_path, "eval=kfold", "eval.k=5", "trainer.seeds=2", "eval.baselines=[logreg]")
    assert results["members"] == 10 and results["plan"] == "5 folds x 2 seeds"
    assert results["over"] == "5 folds, 2 seeds averaged per fold"
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    for seed, part in preds.groupby("seed"):
        assert sorted(part.row) == list(range(303))  # every row tested once per seed
    acc = [accuracy_score(p.y_true, p.y_pred) for _, p in preds.groupby("member")]
    auc = [roc_auc_score(p.y_true, p.p_1) for _, p in preds.groupby("member")]
    folds = [np.mean(acc[2 * f: 2 * f + 2]) for f in range(5)]  # members 2f, 2f+1: fold f's two seeds
    assert results["metrics"]["test/accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert results["metrics"]["test/accuracy"]["sd"] == pytest.approx(np.std(folds, ddof=1))
    assert results["metrics"]["test/accuracy"]["others"]["members"]["sd"] == pytest.approx(np.std(acc, ddof=1))
    assert results["metrics"]["test/roc_auc"]["mean"] == pytest.approx(np.mean(auc))
    assert results["metrics"]["test/accuracy"]["n"] == 5
    assert set(results["baselines"]) == {"majority", "logreg"}
    assert results["selection"] == {"metric": "accuracy", "higher_is_better": True}
    assert 0.5 < results["validation"]["val/accuracy"]["mean"] <= 1
    splits = json.loads((run / "split_indices.json").read_text())
    for s in splits:  # the held-out fold is disjoint from what the member trained and validated on
        assert not set(s["test"]) & (set(s["train"]) | set(s["val"]))
    every = pd.read_csv(run / "predictions.csv")
    for s in splits:  # validation predictions are written too, on each member's own validation rows
        val = every[(every.member == s["member"]) & (every.split == "val")]
        assert sorted(val.row) == sorted(s["val"])


def test_refit_records_the_selection_split_and_history(tmp_path):
    run, results = _run(tmp_path, "eval.refit=true")
    split = json.loads((run / "split_indices.json").read_text())[0]
    assert split["val"] == [] and len(split["train"]) == 303 - 61
    # the split that chose the epoch count: train and val, whose union is what the refit trained on
    assert len(split["selection_val"]) == 61 and sorted(split["selection_train"] + split["selection_val"]) == \
        split["train"]
    history = pd.read_csv(run / "metrics.csv")
    assert history["val/loss"].notna().all() and len(history) == results["epochs"]["mean_trained"]
    assert (run / "checkpoints" / "refit.pt").exists()


def test_loo_pools_each_seeds_predictions(tmp_path):
    data = tmp_path / "small.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    pd.DataFrame({"x": x, "z": rng.normal(size=40), "y": (x > 0).astype(int)}).to_csv(data, index=False)
    run, results = _run(tmp_path, "dataset=csv", f"dataset.path={data}", "dataset.target=y", "eval=loo")
    assert results["members"] == 40 and results["over"] == "40 test rows"
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    assert results["metrics"]["test/accuracy"]["mean"] == pytest.approx(accuracy_score(preds.y_true, preds.y_pred))
    assert results["metrics"]["test/roc_auc"]["mean"] == pytest.approx(roc_auc_score(preds.y_true, preds.p_1))
    assert results["baselines"]["majority"]["test/roc_auc"]["mean"] == 0.5  # one constant score ranks nothing
    # validation: each validation row once, its values averaged over the folds that validated on it
    splits = json.loads((run / "split_indices.json").read_text())
    val_rows = {r for s in splits for r in s["val"]}
    assert results["validation"]["val/accuracy"]["n"] == len(val_rows) < sum(len(s["val"]) for s in splits)
    assert results["validation"]["val/roc_auc"]["interval"].endswith("resamples of the validation rows, seed 0)")


def test_kfold_with_seeds_headline_is_the_spread_over_folds(tmp_path):
    run, results = _run(tmp_path, "eval=kfold", "eval.k=4", "trainer.seeds=3")
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    acc = preds.assign(ok=preds.y_true == preds.y_pred).groupby(["fold", "member"]).ok.mean()
    fold_means = acc.groupby("fold").mean()
    headline = results["metrics"]["test/accuracy"]
    assert headline["n"] == 4 and results["over"] == "4 folds, 3 seeds averaged per fold"
    assert headline["mean"] == pytest.approx(fold_means.mean())
    # the folds' SE, never under the SE over the test rows (each row's correctness averaged over its 3 seeds)
    rows = preds.assign(ok=preds.y_true == preds.y_pred).groupby("row").ok.mean()
    floor = rows.std(ddof=1) / len(rows) ** 0.5
    assert headline["se"] == pytest.approx(max(fold_means.std(ddof=1) / 2, floor))
    assert "95% CI over 4 folds, 3 seeds averaged per fold (n = 4)" in (run / "report.md").read_text()


def test_a_scoring_failure_keeps_everything_trained(tmp_path, monkeypatch):
    from runner import finish as train_module

    def broken(*args, **kwargs):
        raise MemoryError("scoring")

    monkeypatch.setattr(train_module, "summarize", broken)
    run = tmp_path / "run"
    assert main(["train", *QUICK, f"hydra.run.dir={run}"]) == 2  # out of memory: one line, status failed
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    for name in ("predictions.csv", "metrics.csv", "split_indices.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).stat().st_size > 0, name
    assert len(pd.read_csv(run / "predictions.csv").query("split == 'test'")) == 61 and not (run / "results.json").exists()


def test_a_checkpoint_alone_reproduces_the_test_predictions(tmp_path, heart):
    """best.pt holds the model spec, input shape and each member's fitted preprocessing: rebuilding the
    population from it and applying it to the dataset's rows gives predictions.csv's probabilities."""
    import torch

    from runner.config.schema import ModelConfig
    from runner.data.preprocess import restore
    from runner.engine.inputs import MemberInputs
    from runner.engine.predict import member_outputs
    from runner.models import build_model

    run, _ = _run(tmp_path, "eval=kfold", "eval.k=3", "model.dropout=0.2", "model.norm=batch")
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    model = build_model(ModelConfig(**state["model_config"]), len(state["members"]), state["input_shape"], 1)
    with torch.no_grad():
        model.flat.copy_(state["flat"])
        model.stats.copy_(state["stats"])
    pre = restore(heart, {k: v.numpy() for k, v in state["preprocessing"].items()})
    assert pre.names == state["features"]
    splits = json.loads((run / "split_indices.json").read_text())
    rows = [np.array(s["test"]) for s in splits]
    proba = member_outputs(model, MemberInputs.from_preprocessed(pre, "cpu"), rows, state["loss"])
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    for e, r in enumerate(rows):
        np.testing.assert_allclose(proba[e, : len(r), 1], preds[preds.member == e].p_1, atol=1e-6)
