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


SIMULATED_SWEEPS = 30  # ~2.5 min on 2 CPU cores


def _sweep(sweep_dir, data, grid, extra=()):
    """`runner train -m GRID` on one synthetic CSV (k-fold, quiet, in-process): its comparison."""
    import contextlib
    import io
    import sys

    from runner.evaluate.compare import compare

    argv = sys.argv[:]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["train", "-m", *grid, "dataset=csv", f"dataset.path={data}", "dataset.target=y",
                           "eval=kfold", "eval.k=5", "trainer.epochs=50", "trainer.progress=false",
                           "trainer.device=cpu", f"hydra.sweep.dir={sweep_dir}", *extra])
    finally:
        sys.argv = argv
    assert status == 0
    return compare([sweep_dir])


def test_paired_comparison_holds_its_level_under_the_null_and_finds_a_worse_config(tmp_path):
    """Simulated sweeps on fresh synthetic data each: four jobs of one config that differ only in trainer.seed
    (true null: any `worse` is a family-wise false alarm), and a good lr beside one 100x too small."""
    import pandas as pd
    from sklearn.datasets import make_classification

    from runner.evaluate.compare import interval

    false_alarms = found = found_by_overlap = 0
    for s in range(SIMULATED_SWEEPS):
        X, y = make_classification(n_samples=300, n_features=6, n_informative=3, flip_y=0.1, random_state=s)
        data = tmp_path / f"data{s}.csv"
        pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]).assign(y=y).to_csv(data, index=False)

        null = _sweep(tmp_path / f"null{s}", data, ["trainer.seed=0,10,20,30"], ["optim.lr=0.01"])
        assert len(null.rows) == 4 and all(r["vs_best"] for r in null.rows[1:])  # all paired over the 5 folds
        false_alarms += any(r["mark"] == "worse" for r in null.rows)

        pair = _sweep(tmp_path / f"lr{s}", data, ["optim.lr=0.01,0.0001"], [f"trainer.seed={s}"])
        bad = next(r for r in pair.rows if r["overrides"]["optim.lr"] == "0.0001")
        best = pair.rows[0]
        found += bad["mark"] == "worse"
        # The rule it replaces: the two runs' 95% test intervals do not overlap.
        metric = pair.metric
        (best_lo, best_hi), (bad_lo, bad_hi) = interval(best["metrics"][metric]), interval(bad["metrics"][metric])
        found_by_overlap += bad is not best and (bad_hi < best_lo or best_hi < bad_lo)
    n = SIMULATED_SWEEPS
    print(f"\n{n} simulated sweeps: null (4 seeds of one config) flagged some run worse in {false_alarms}/{n} = "
          f"{false_alarms / n:.1%}; lr 100x too small flagged worse by the paired test in {found}/{n} = {found / n:.1%}, "
          f"by non-overlapping test intervals in {found_by_overlap}/{n} = {found_by_overlap / n:.1%}")
    assert false_alarms / n <= 0.05
    assert found / n >= 0.90
    assert found_by_overlap < found
