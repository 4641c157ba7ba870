"""Optuna search (hydra/sweeper=optuna): the objective, batches, failed trials, resume, the search space."""

import json
import sqlite3
import sys

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from runner.sweeps.search import objective
from runner.errors import RunnerError

optuna = pytest.importorskip("optuna")

QUICK = ["trainer.epochs=3", "trainer.progress=false", "trainer.device=cpu"]


def _results(job_dir) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def _mtimes(sweep_dir) -> dict:
    return {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/results.json")}


@pytest.mark.slow  # 9 s: a 6-trial study run twice; the other search tests cover its pieces
def test_optuna_sweep_judges_by_validation_reports_its_best_and_resumes(train, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hparams_search=heart_optuna", *QUICK, f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3"]
    status, out, err = train(*args)
    assert status == 0, err
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert trials["number"].tolist() == list(range(6)) and set(trials["state"]) == {"COMPLETE"}
    for _, trial in trials.iterrows():
        results = _results(sweep_dir / str(trial["number"]))
        assert trial["job_dir"] == str(sweep_dir / str(trial["number"]))
        # The objective is the validation selection metric, and no test metric goes into it.
        assert trial["value"] == pytest.approx(results["validation"]["val/accuracy"]["mean"], abs=1e-12)
        without_test = {k: v for k, v in results.items() if k not in ("metrics", "baselines", "confusion")}
        assert objective(without_test) == trial["value"]
        # The job ran with the parameters Optuna chose.
        overrides = (sweep_dir / str(trial["number"]) / ".hydra" / "overrides.yaml").read_text()
        assert f"optim.lr={trial['params.optim.lr']!r}" in overrides
        assert f"model.hidden={trial['params.model.hidden']}" in overrides
        # TensorBoard shows the job by its overrides (one run, its folder), its numbers to 3 significant digits.
        [tensorboard_run] = [p.name for p in (sweep_dir / str(trial["number"]) / "tensorboard").iterdir()]
        assert tensorboard_run.startswith(f"optim.lr={trial['params.optim.lr']:.3g},")
    best = trials.loc[trials["value"].idxmax()]
    assert f"best trial {best['number']}: val/accuracy = {best['value']:.4f}" in " ".join(out.split())
    assert f"job dir {sweep_dir / str(best['number'])}" in " ".join(out.split())
    study = optuna.load_study(study_name="runner", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.best_trial.number == best["number"]

    # The same command again: nothing trains. Two more trials asked: only those two run.
    before = _mtimes(sweep_dir)
    status, _, err = train(*args)
    assert status == 0, err
    assert _mtimes(sweep_dir) == before and len(pd.read_csv(sweep_dir / "trials.csv")) == 6
    status, _, err = train(*args[:-2], "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=3")
    assert status == 0, err
    assert {p: t for p, t in _mtimes(sweep_dir).items() if p in before} == before
    assert sorted(int(p.parent.name) for p in _mtimes(sweep_dir)) == list(range(8))
    assert pd.read_csv(sweep_dir / "trials.csv")["number"].tolist() == list(range(8))


def _as_config(text: str):
    """A searched value as the job's config holds it ("[16]" -> [16], "0.01" -> 0.01)."""
    return yaml.safe_load(text) if isinstance(text, str) else text


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_trials_a_killed_search_left_running_finish_with_all_their_parameters_in_their_own_folders(train, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hparams_search=heart_optuna", *QUICK, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_jobs=2"]
    assert train(*args, "hydra.sweeper.n_trials=2")[0] == 0
    before = _mtimes(sweep_dir)
    # What a SIGKILL leaves behind, three ways. Trial 1: its job finished, the kill came before Optuna was told.
    with sqlite3.connect(sweep_dir / "optuna.db") as db:
        (trial_id,) = db.execute("SELECT trial_id FROM trials WHERE number = 1").fetchone()
        db.execute("UPDATE trials SET state = 'RUNNING', datetime_complete = NULL WHERE trial_id = ?", (trial_id,))
        db.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial_id,))
        db.execute("DELETE FROM trial_user_attributes WHERE trial_id = ?", (trial_id,))
    study = optuna.load_study(study_name="runner", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    full = dict(study.trials[0].distributions)
    assert len(full) == 5
    # Trial 2: killed inside study.ask, which stores the values one at a time: only optim.lr was stored.
    lr = study.ask({"optim.lr": full["optim.lr"]}).params["optim.lr"]
    # Trial 3: asked in full, its job killed while training: a half-written folder.
    study.ask(full)
    killed = sweep_dir / "3"
    (killed / "tensorboard" / "killed").mkdir(parents=True)
    (killed / "tensorboard" / "killed" / "events.out.tfevents.0").write_text("half")
    (killed / "metrics.csv").write_text("epoch\n1\n")
    (killed / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 1}))

    status, out, err = train(*args, "hydra.sweeper.n_trials=4")
    assert status == 0, err
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert trials["number"].tolist() == [0, 1, 2, 3] and set(trials["state"]) == {"COMPLETE"}
    searched = [f"params.{k}" for k in full]
    assert not trials[searched].isna().any().any()  # every trial has every searched value
    assert trials.loc[2, "params.optim.lr"] == lr  # trial 2 kept the value it had; the others were drawn now
    for _, trial in trials.iterrows():
        job_dir = sweep_dir / str(trial["number"])
        assert trial["job_dir"] == str(job_dir)
        assert trial["value"] == objective(_results(job_dir))
        # The folder holds the run trained with exactly the trial's values.
        config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        for key in full:
            assert OmegaConf.select(config, key) == _as_config(trial[f"params.{key}"]), key
    assert {p: t for p, t in _mtimes(sweep_dir).items() if p in before} == before  # 0 and 1: not trained again
    assert not (killed / "tensorboard" / "killed").exists()  # the killed job's files went before it ran again
    assert len(pd.read_csv(killed / "metrics.csv")) == 3  # one row per epoch of the new run
    assert "did not finish" not in (sweep_dir / "summary.md").read_text()


def test_a_job_folder_of_another_study_is_never_taken_for_a_trials_run(train, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=optuna", "optim.lr=tag(log, interval(1e-3, 1e-1))", *QUICK,
            f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=1"]
    assert train(*args)[0] == 0
    before = _mtimes(sweep_dir)
    (sweep_dir / "optuna.db").unlink()  # a new study over the old job folders: its trial 0 draws another lr
    status, _, err = train(*args, "hydra.sweeper.seed=1")
    assert status == 2 and err.count("\n") == 1, err
    assert f"{sweep_dir / '0'} holds the finished run of other overrides than its trial's" in err
    assert _mtimes(sweep_dir) == before


def test_a_failed_trial_is_told_as_failed_and_the_sweep_goes_on(train, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # A negative learning rate is refused by the job's config check: that trial's job fails.
    status, out, err = train("-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=5",
                             "hydra.sweeper.n_jobs=5", "optim.lr=choice(0.01,-1.0)", *QUICK,
                             f"hydra.sweep.dir={sweep_dir}")
    trials = pd.read_csv(sweep_dir / "trials.csv")
    bad = trials["params.optim.lr"] < 0
    assert bad.any() and (~bad).any()  # the seeded sampler chose both (else the test shows nothing)
    assert (trials.loc[bad, "state"] == "FAIL").all() and trials.loc[bad, "value"].isna().all()
    assert (trials.loc[~bad, "state"] == "COMPLETE").all()
    assert status == 2 and "optim.lr" in err  # each failed job's line, after every trial ran
    for number in trials.loc[bad, "number"]:
        assert json.loads((sweep_dir / str(number) / "status.json").read_text())["status"] == "failed"


def test_a_signal_stops_the_whole_search_and_the_same_command_runs_its_trial_again(train, tmp_path, monkeypatch):
    """SIGTERM during trial 1: the search stops there with 143 (no later trial starts, trial 1 is not told as
    failed); the same command runs trial 1 again in its own folder, then the rest."""
    import signal

    import runner.engine.stacking
    from runner.errors import Interrupted

    real, calls = runner.engine.stacking.fit, []

    def stopped_in_trial_1(model, data, cfg, loss, on_epoch, *args, **kwargs):
        calls.append(cfg.optim.lr)

        def once(epoch, active):
            on_epoch(epoch, active)
            if len(calls) == 2:
                raise Interrupted(signal.SIGTERM)

        return real(model, data, cfg, loss, once, *args, **kwargs)

    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "optim.lr=interval(0.001,0.1)", *QUICK,
            f"hydra.sweep.dir={sweep_dir}"]
    with monkeypatch.context() as patch:
        patch.setattr(runner.engine.stacking, "fit", stopped_in_trial_1)
        status, _, err = train(*args)
    assert status == 143 and "resume with the same command" in err, err
    study = optuna.load_study(study_name="runner", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    assert json.loads((sweep_dir / "1" / "status.json").read_text())["status"] == "interrupted"
    assert not (sweep_dir / "2").exists()
    status, _, err = train(*args)
    assert status == 0, err
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert trials["state"].tolist() == ["COMPLETE"] * 3
    assert trials.loc[1, "params.optim.lr"] == pytest.approx(calls[1], abs=0)  # trial 1 with its own parameters
    assert _results(sweep_dir / "1")["validation"]["val/accuracy"]["mean"] == trials.loc[1, "value"]


def test_objective_is_none_for_a_failed_or_non_finite_job():
    results = {"selection": {"metric": "rmse"}, "validation": {"val/rmse": {"mean": 1.5}},
               "metrics": {"test/rmse": {"mean": 0.1}}}
    assert objective(results) == 1.5
    assert objective(None) is None
    assert objective({**results, "validation": {"val/rmse": {"mean": float("nan")}}}) is None


def _space(*overrides):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from runner.sweeps.search import search_space

    return search_space(OverridesParser.create().parse_overrides(list(overrides)))


def test_search_space_reads_hydras_sweep_grammar():
    space = _space("optim.lr=tag(log, interval(1e-4, 1e-1))", "model.dropout=interval(0, 0.5)",
                   "trainer.epochs=range(10, 35, 10)", "model.hidden=choice([8],[16])", "optim=sgd,adam",
                   "trainer.seeds=2", "optim.momentum=choice(0.0, 0.9)", "optim.momentum=0.5")
    d = optuna.distributions
    assert space.distributions == {
        "optim.lr": d.FloatDistribution(1e-4, 1e-1, log=True),
        "model.dropout": d.FloatDistribution(0.0, 0.5),
        "trainer.epochs": d.IntDistribution(10, 30, step=10),
        "model.hidden": d.CategoricalDistribution(["[8]", "[16]"]),
        "optim": d.CategoricalDistribution(["sgd", "adam"]),
    }
    assert space.fixed == ["trainer.seeds=2", "optim.momentum=0.5"]  # the later override wins
    assert space.overrides({"optim.lr": 0.1 / 3, "model.hidden": "[16]", "trainer.epochs": 20}) == [
        "trainer.seeds=2", "optim.momentum=0.5", f"optim.lr={0.1 / 3!r}", "model.hidden=[16]", "trainer.epochs=20"]


@pytest.mark.parametrize("overrides, says", [
    (["trainer.seeds=2"], "nothing to search"),
    (["optim.lr=tag(log, interval(0, 1))"], "start > 0 on a log scale"),
    (["optim.lr=interval(1, 0.5)"], "needs start <= end"),
    (["trainer.epochs=range(5, 5)"], "holds no values"),
])
def test_search_space_refuses_what_it_cannot_search(overrides, says):
    with pytest.raises(RunnerError, match=says):
        _space(*overrides)


def test_bad_sweeper_settings_are_one_line(train, tmp_path):
    status, _, err = train("-m", "hparams_search=heart_optuna", "hydra.sweeper.sampler=grid", *QUICK,
                           f"hydra.sweep.dir={tmp_path / 's'}")
    assert status == 2 and err.strip() == "error: hydra.sweeper.sampler=grid is not an option; choose one of: tpe, random"


def test_missing_optuna_names_the_extra(train, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    status, out, err = train("-m", "hparams_search=heart_optuna", *QUICK, f"hydra.sweep.dir={tmp_path / 's'}")
    assert status == 2
    assert err.strip() == "error: hydra/sweeper=optuna needs optuna: pip install 'stackrunner[sweeps]'"
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
