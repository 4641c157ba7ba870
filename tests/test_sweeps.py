"""A sweep's outcome on disk under every launcher: status per job, summary.md/csv, exit status, resuming the
same sweep, joblib running jobs side by side, and the one-line hint for a launcher that is not installed."""

import csv
import json
import sys

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.errors import MissingConfigException

from runner.config.compose import explain
from runner.commands.cli import main

QUICK = ["trainer.epochs=3", "trainer.progress=false"]


@pytest.fixture
def sweep(capsys, monkeypatch, tmp_path):
    """sweep(where, *overrides): `runner train -m` in-process; (exit status, sweep dir, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])

    def run(where, *args):
        status = main(["train", "-m", *QUICK, *args, f"hydra.sweep.dir={tmp_path / where}"])
        out = capsys.readouterr()
        return status, tmp_path / where, out.out, out.err

    return run


def _summary(sweep_dir):
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


def test_a_grid_gives_one_summary_row_per_job_with_its_overrides(sweep):
    status, where, out, _ = sweep("grid", "optim=sgd,adam,adamw", "trainer.seed=0,1")
    assert status == 0
    rows = _summary(where)
    assert sorted(r["run"] for r in rows) == [str(j) for j in range(6)] and {r["status"] for r in rows} == {"ok"}
    assert {(r["optim"], r["trainer.seed"]) for r in rows} == {(o, s) for o in ("sgd", "adam", "adamw") for s in "01"}
    for r in rows:  # each row carries its job's own numbers
        results = json.loads((where / r["run"] / "results.json").read_text())
        assert float(r["test/accuracy"]) == results["metrics"]["test/accuracy"]["mean"]
    assert "6 runs compared" in (where / "summary.md").read_text() and "6 of 6 jobs finished" in " ".join(out.split())


@pytest.mark.parametrize("launcher", ["population", "basic", "joblib",
                                      pytest.param("submitit_local", marks=pytest.mark.slow)])
def test_a_failing_job_is_failed_in_the_summary_the_others_finish_and_the_exit_status_says_so(sweep, launcher):
    status, where, _, err = sweep(launcher, "optim.lr=0.01,-1", f"hydra/launcher={launcher}")
    assert status == 2 and "optim.lr=-1.0 is not valid" in err  # a user error, whichever process ran the job
    rows = {r["run"]: r for r in _summary(where)}
    assert rows["0"]["status"] == "ok" and rows["1"]["status"] == "failed"
    assert rows["1"]["optim.lr"] == "-1" and "positive learning rate" in rows["1"]["error"]
    assert json.loads((where / "1" / "status.json").read_text())["status"] == "failed"  # read from disk
    assert (where / "0" / "results.json").is_file() and not (where / "1" / "results.json").exists()


@pytest.mark.parametrize("launcher", ["population", pytest.param("basic", marks=pytest.mark.slow)])
def test_running_the_same_sweep_again_trains_only_what_is_unfinished(sweep, launcher):
    grid = ["optim.lr=0.01,0.003", "trainer.seed=0,1", f"hydra/launcher={launcher}"]
    status, where, _, _ = sweep("again", *grid)
    assert status == 0
    stamps = {j: (where / str(j) / "results.json").stat().st_mtime_ns for j in range(4)}
    (where / "3" / "results.json").unlink()  # job 3 did not finish
    (where / "3" / "status.json").write_text(json.dumps({"status": "interrupted"}))
    status, _, out, _ = sweep("again", *grid)
    assert status == 0
    assert {j: (where / str(j) / "results.json").stat().st_mtime_ns for j in range(3)} == {
        j: stamps[j] for j in range(3)}  # untouched
    assert json.loads((where / "3" / "status.json").read_text())["status"] == "ok"
    assert "4 of 4 jobs finished" in " ".join(out.split())


def test_another_sweep_in_a_used_sweep_dir_is_refused(sweep):
    assert sweep("used", "optim.lr=0.01,0.003")[0] == 0
    status, where, _, err = sweep("used", "optim.lr=0.1,0.3")
    assert status == 2 and "holds another sweep (" in err and err.count("\n") == 1


def test_joblib_runs_two_jobs_at_once_with_a_thread_each(sweep):
    status, where, _, err = sweep("parallel", "optim.lr=0.01,0.003", "hydra/launcher=joblib",
                                  "hydra.launcher.n_jobs=2", "trainer.epochs=30")
    assert status == 0, err
    a, b = (json.loads((where / j / "status.json").read_text()) for j in "01")
    assert a["pid"] != b["pid"]
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # their running times overlap


@pytest.mark.parametrize("group,choice,plugin", [("hydra/launcher", "joblib", "joblib"),
                                                 ("hydra/launcher", "submitit_local", "runner_submitit_local"),
                                                 ("hydra/launcher", "slurm", "runner_submitit_slurm"),  # our preset on it
                                                 ("hydra/sweeper", "optuna", "runner_optuna")])
def test_a_launcher_or_sweeper_from_the_extra_names_the_extra_when_its_plugin_is_absent(
        sweep, monkeypatch, group, choice, plugin):
    Plugins.instance()  # the installed plugins register their configs; then this one is taken away again
    monkeypatch.delitem(ConfigStore.instance().repo["hydra"][group.split("/")[1]], f"{plugin}.yaml")
    status, where, out, err = sweep("missing", "optim.lr=0.01,0.003", f"{group}={choice}")
    assert status == 2 and not where.exists()
    assert err == (f"error: {group}={choice} needs the sweeps extra: pip install 'stackrunner[sweeps]' (installs "
                   "optuna and Hydra's joblib and submitit plugins)\n")


def test_a_launcher_that_no_extra_provides_lists_the_options():
    exc = MissingConfigException("In 'config': Could not find 'hydra/launcher/jobsub'", missing_cfg_file="x",
                                 options=["basic", "population"])
    assert explain(exc) == "hydra/launcher=jobsub is not an option; choose one of: basic, population"


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_finished_sweep_run_again_trains_nothing_and_leaves_every_file_as_it_was(sweep, launcher):
    grid = ["optim.lr=0.01,0.003", f"hydra/launcher={launcher}"]
    status, where, _, _ = sweep("done", *grid)
    assert status == 0
    before = {p: p.read_bytes() for p in where.rglob("*") if p.is_file()}
    stamps = {j: (where / j / "results.json").stat().st_mtime_ns for j in "01"}
    status, _, out, _ = sweep("done", *grid)  # Hydra rewrites each job's .hydra/ first: to the same content
    assert status == 0
    if launcher == "basic":  # joblib's jobs print from worker processes, past capsys
        assert out.count("finished before") == 2 and "run directory:" not in out
    assert {p: p.read_bytes() for p in where.rglob("*") if p.is_file()} == before
    assert {j: (where / j / "results.json").stat().st_mtime_ns for j in "01"} == stamps


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(sweep):
    status, where, _, err = sweep("submitit", "optim.lr=0.01,0.003", "hydra/launcher=submitit_local")
    assert status == 0, err
    assert [r["status"] for r in _summary(where)] == ["ok", "ok"]


def test_jobs_run_elsewhere_exit_2_only_when_each_failed_job_was_a_user_error(tmp_path, capsys):
    """What `runner train -m` reads from the job folders of joblib or submitit: status.json's cause."""
    from omegaconf import OmegaConf

    from runner import rundir
    from runner.sweeps.outcome import Outcome, recording
    from runner.sweeps.sweep_report import SweepReport

    for job in "012":
        (tmp_path / job).mkdir()
    rundir.write_status(tmp_path / "0", "ok")
    rundir.fail(tmp_path / "1", "optim.lr=-1.0 is not valid: use a positive learning rate", cause="user")
    rundir.fail(tmp_path / "2", "bad config", cause="user")
    rundir.fail(tmp_path / "2", "TypeError: boom")  # the same job run again, a bug this time: no stale cause
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with recording(Outcome()) as outcome:
        SweepReport().on_multirun_end(config)
    assert outcome.failed == ["job 1 failed: optim.lr=-1.0 is not valid: use a positive learning rate",
                              "job 2 failed: TypeError: boom"]
    assert outcome.crashed == ["2"] and "cause" not in rundir.read_status(tmp_path / "2")
    rundir.write_status(tmp_path / "2", "ok")
    with recording(Outcome()) as outcome:
        SweepReport().on_multirun_end(config)
    assert len(outcome.failed) == 1 and outcome.crashed == []
    capsys.readouterr()
