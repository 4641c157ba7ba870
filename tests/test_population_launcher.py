"""hydra/launcher=population: a sweep's compatible jobs train as one population, and every job's run directory
holds the files and numbers that Hydra's basic launcher (each job alone) gives."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import every_number

from runner.commands.cli import main
from runner.sweeps.population import groups, job_numbers

QUICK = ["trainer.epochs=4", "trainer.progress=false"]
FILES = [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "results.json", "report.md",
         "metrics.csv", "predictions.csv", "status.json", "split_indices.json", "checkpoints/best.pt",
         "checkpoints/last.pt"]


@pytest.fixture
def sweep(capsys, monkeypatch, tmp_path):
    """sweep(launcher, *overrides): run `runner train -m` in-process; (exit status, sweep dir, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])

    def run(launcher, *args):
        where = tmp_path / launcher
        status = main(["train", "-m", *QUICK, *args, f"hydra/launcher={launcher}", f"hydra.sweep.dir={where}"])
        out = capsys.readouterr()
        return status, where, out.out, out.err

    return run


def _same_as_basic(population_dir, basic_dir, jobs: int) -> None:
    for j in range(jobs):
        mine, theirs = (json.loads((d / str(j) / "results.json").read_text()) for d in (population_dir, basic_dir))
        a, b = every_number(mine), every_number(theirs)
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float) and isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), (j, key)
            else:
                assert a[key] == b[key], (j, key)
        # the per-epoch history and every prediction are the job's own, too
        for name in ("metrics.csv", "predictions.csv"):
            pd.testing.assert_frame_equal(pd.read_csv(population_dir / str(j) / name),
                                          pd.read_csv(basic_dir / str(j) / name), atol=1e-6, rtol=0)
        for name in (".hydra/overrides.yaml", ".hydra/config.yaml"):  # composed as Hydra composes each alone
            assert (population_dir / str(j) / name).read_text() == (basic_dir / str(j) / name).read_text()


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_a_seed_grid_trains_as_one_population_and_equals_each_job_alone(sweep):
    # members stop early at different epochs: each job's history ends where its own members stopped
    grid = ["trainer.seed=0,1,2", "eval.split_seed=0,1", "trainer.seeds=2", "trainer.epochs=40",
            "trainer.early_stopping.patience=3", "optim.lr=0.02", "model.dropout=0.2"]
    status, mine, out, err = sweep("population", *grid)
    assert status == 0, err
    assert "group 1: jobs 0-5 as one population of 12 members" in " ".join(out.split())
    for j in range(6):
        for name in FILES:
            assert (mine / str(j) / name).is_file(), (j, name)
        assert json.loads((mine / str(j) / "status.json").read_text())["status"] == "ok"
        assert any((mine / str(j) / "tensorboard").iterdir())
        assert json.loads((mine / str(j) / "results.json").read_text())["members"] == 2
    epochs = [json.loads((mine / str(j) / "results.json").read_text())["epochs"]["mean_trained"] for j in range(6)]
    assert max(epochs) < 40 and len(set(epochs)) > 1  # early stopping, at different epochs
    status, basic, _, err = sweep("basic", *grid)
    assert status == 0, err
    _same_as_basic(mine, basic, 6)


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_learning_rates_and_weight_decays_share_one_population_and_equal_each_job_alone(sweep):
    # Seeds 0 and 2: seed 1 at lr 0.003 meets a float32 near-tie at epoch 5 (its val loss moves 1.3e-5 between
    # `trainer.seed=1` and the same member in `trainer.seeds=2`, no launcher involved): the engine's own limit.
    grid = ["optim.lr=0.01,0.003", "optim.weight_decay=0,1e-3", "trainer.seed=0,2", "trainer.epochs=10"]
    status, mine, out, err = sweep("population", *grid)
    assert status == 0, err
    assert "group 1: jobs 0-7 as one population of 8 members" in " ".join(out.split())
    status, basic, _, err = sweep("basic", *grid)
    assert status == 0, err
    _same_as_basic(mine, basic, 8)
    curves = [pd.read_csv(mine / str(j) / "metrics.csv")["lr"].iloc[0] for j in (0, 4)]
    assert curves == [0.01, 0.003]  # each job's own learning rate, from its members' history


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_sampled_configurations_share_one_population_and_equal_each_job_alone(sweep):
    # each job's members get their seeds' draws of sample.* in the shared population, as in the job alone
    grid = ["reg.l2=0,0.01", "sample.lr=[0.001,0.03]", "sample.label_smoothing=[0,0.2]", "trainer.seeds=2",
            "trainer.epochs=6"]
    status, mine, out, err = sweep("population", *grid)
    assert status == 0, err
    assert "group 1: jobs 0, 1 as one population of 4 members" in " ".join(out.split())
    status, basic, _, err = sweep("basic", *grid)
    assert status == 0, err
    _same_as_basic(mine, basic, 2)
    sampled = json.loads((mine / "0" / "results.json").read_text())["sampled"]
    assert pd.read_csv(mine / "0" / "metrics.csv").groupby("member")["lr"].first().tolist() == pytest.approx(
        [d["lr"] for d in sampled])  # member i is seed i: its own draw, not the job's optim.lr


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_jobs_of_another_model_size_form_their_own_group(sweep):
    grid = ["model.hidden=[8],[16]", "trainer.seed=0,1"]
    status, mine, out, err = sweep("population", *grid)
    assert status == 0, err
    flat = " ".join(out.split())
    assert "group 1: jobs 0, 1 as one population of 2 members" in flat
    assert "group 2: jobs 2, 3 as one population of 2 members" in flat
    params = [json.loads((mine / str(j) / "results.json").read_text())["parameters_per_member"] for j in range(4)]
    assert params == [8 * 28 + 8 + 9] * 2 + [16 * 28 + 16 + 17] * 2  # heart's 28 features, one logit
    status, basic, _, err = sweep("basic", *grid)
    assert status == 0, err
    _same_as_basic(mine, basic, 4)


def test_a_job_with_a_bad_value_fails_alone_and_the_sweep_exits_non_zero(sweep):
    status, mine, out, err = sweep("population", "optim.lr=0.01,-1", "trainer.seed=0,1")
    assert status == 2
    records = {j: json.loads((mine / str(j) / "status.json").read_text()) for j in range(4)}
    # jobs: 0 lr 0.01 seed 0, 1 lr 0.01 seed 1, 2 and 3: lr -1
    assert [records[j]["status"] for j in range(4)] == ["ok", "ok", "failed", "failed"]
    assert "optim.lr" in records[2]["error"] and "positive learning rate" in records[2]["error"]
    assert not (mine / "2" / "results.json").exists()
    assert "job 2:" in err and "job 3:" in err


def test_a_crash_in_a_shared_fit_fails_each_of_its_jobs_and_not_the_others(sweep, monkeypatch):
    import runner.engine.stacking

    real = runner.engine.stacking.fit

    def crash_for_hidden_8(model, data, cfg, *args, **kwargs):
        if cfg.model.hidden == [8]:
            raise RuntimeError("boom")
        return real(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(runner.engine.stacking, "fit", crash_for_hidden_8)
    status, mine, _, err = sweep("population", "model.hidden=[8],[16]", "trainer.seed=0,1")
    assert status == 1  # a crash
    records = [json.loads((mine / str(j) / "status.json").read_text()) for j in range(4)]
    assert [r["status"] for r in records] == ["failed", "failed", "ok", "ok"]
    assert records[0]["error"] == records[1]["error"] == "RuntimeError: boom"
    assert "Traceback" in (mine / "1" / "error.log").read_text()
    assert "job 0 crashed" in err and "job 1 crashed" in err


def test_a_finished_job_is_not_trained_again(sweep, monkeypatch):
    from runner.commands.train import CheckRun

    grid = ["trainer.seed=0,1,2"]
    status, mine, _, err = sweep("population", *grid)
    assert status == 0, err
    finished = (mine / "0" / "results.json").read_bytes()
    stamp = (mine / "0" / "results.json").stat().st_mtime_ns
    (mine / "1" / "status.json").write_text(json.dumps({"status": "failed", "error": "stopped"}))
    monkeypatch.setattr(CheckRun, "on_multirun_start", lambda *a, **k: None)  # the sweep-dir rule is not ours here
    status, _, out, err = sweep("population", *grid)
    assert status == 0, err
    assert (mine / "0" / "results.json").read_bytes() == finished
    assert (mine / "0" / "results.json").stat().st_mtime_ns == stamp
    assert json.loads((mine / "1" / "status.json").read_text())["status"] == "ok"
    assert (mine / "1" / "results.json").stat().st_mtime_ns > stamp  # trained again: it had not finished


def test_groups_keep_the_first_jobs_order_and_none_keys_alone():
    assert groups(["a", "b", "a", None, "b", None]) == [[0, 2], [1, 4], [3], [5]]
    assert job_numbers([0, 1, 2, 3]) == "jobs 0-3"
    assert job_numbers([0, 2, 3]) == "jobs 0, 2, 3"
    assert job_numbers([4]) == "job 4"


def test_a_slice_of_a_population_equals_its_fit_alone(compose):
    """fit_group's slices against each study fitted alone, array by array."""
    import torch

    from runner.data.preprocess import preprocess
    from runner.fit import fit_population
    from runner.study import plan
    from runner.sweeps.population import fit_group

    studies = [plan(compose(["trainer.epochs=3", "trainer.progress=false", f"trainer.seed={s}", "trainer.seeds=2",
                             f"eval.split_seed={s}"])) for s in (0, 5)]
    together = fit_group(studies, "test")
    for study, piece in zip(studies, together):
        alone = fit_population(study, study.members, preprocess(study.dataset, study.members), study.over)
        assert [m.index for m in piece.members] == [0, 1]
        assert [m.seed for m in piece.members] == [m.seed for m in study.members]
        np.testing.assert_array_equal(piece.pre.shift, alone.pre.shift)
        torch.testing.assert_close(piece.model.flat, alone.model.flat, atol=1e-6, rtol=0)
        torch.testing.assert_close(piece.result.last, alone.result.last, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(piece.result.epochs_run, alone.result.epochs_run)
        for name in alone.result.history:
            np.testing.assert_allclose(piece.result.history[name], alone.result.history[name], atol=1e-6)
