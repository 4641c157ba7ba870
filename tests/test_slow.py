"""Longer checks (`make test-slow`): the full heart study, and every member of it against training alone."""

import json

import numpy as np
import pytest
import torch

from runner.commands.cli import main

pytestmark = pytest.mark.slow


def test_heart_kfold_study_beats_the_baselines(tmp_path):
    run = tmp_path / "run"
    args = ["train", "eval=kfold", "eval.k=10", "trainer.seeds=5", "eval.baselines=[logreg]",
            "trainer.progress=false", f"hydra.run.dir={run}"]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    acc = results["metrics"]["test/accuracy"]
    assert results["members"] == 50 and acc["n"] == 10 and acc["others"]["members"]["n"] == 50
    assert results["over"] == "10 folds, 5 seeds averaged per fold"
    assert acc["mean"] > 0.8
    assert acc["ci95"][0] > results["baselines"]["majority"]["test/accuracy"]["ci95"][1]


def test_every_member_of_the_heart_study_equals_training_alone(heart, population_runner):
    from runner.config.schema import Config, EvalConfig, EvalName
    from runner.data.preprocess import preprocess
    from runner.data.splits import population_plan

    cfg = Config(eval=EvalConfig(name=EvalName.kfold, k=10))
    cfg.trainer.epochs = 40
    members = population_plan(heart.y, heart.task, cfg.eval, [0, 1, 2, 3, 4])
    run = population_runner(cfg, preprocess(heart, members), members)

    stacked = run(list(range(50)))
    for i in range(50):
        alone = run([i])
        assert stacked.epochs_run[i] == alone.epochs_run[0]
        np.testing.assert_allclose(stacked.best[i].numpy(), alone.best[0].numpy(), atol=1e-5)
