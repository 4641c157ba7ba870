"""Hard edges: config values and keys refused up front, used run directories, status.json, failed sweep
jobs, write failures, bad data values, labels, and `runner report` on runs of different data."""

import enum
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import recall_score, roc_auc_score

from runner.commands.cli import main
from runner.config.checks import RULES, USED_BY, lookup, validate
from runner.config.schema import Config
from runner.paths import conf_dir

QUICK = ["trainer.epochs=4", "trainer.progress=false"]


def _regression_csv(tmp_path, name="reg.csv", n=40, **columns):
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    frame = pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": 2 * x + rng.normal(size=n), **columns})
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- config edges


def test_every_rule_and_used_by_key_is_a_schema_key_and_the_defaults_pass():
    cfg = Config()
    validate(cfg)
    for key in [k for k, _, _ in RULES] + list(USED_BY):
        lookup(cfg, key)  # AttributeError for a key the schema does not have
    for key, users in USED_BY.items():
        group = key.partition(".")[0]
        kind = type(lookup(cfg, group).name)  # an enum, or (model) a name among the shipped configs
        choices = ({c.value for c in kind} if issubclass(kind, enum.Enum)
                   else {p.stem for p in (conf_dir() / group).glob("*.yaml")})
        assert set(users) <= choices, key


@pytest.mark.parametrize("overrides,needle", [
    (["+optim.lrr=0.5"], "unknown key 'optim.lrr'; valid keys in 'optim': name, lr,"),
    (["++foo=1"], "unknown key 'foo'; valid keys in the top level: dataset,"),
    (["+trainer.early_stopping.patiense=3"], "unknown key 'trainer.early_stopping.patiense'"),
    (["sched=step", "sched.step_size=0"], "sched.step_size=0 is not valid: use a number of epochs >= 1"),
    (["sched=exponential", "sched.gamma=-1"], "sched.gamma=-1.0 is not valid: use a positive factor"),
    (["optim.lr=inf"], "optim.lr=inf is not valid: use a finite number"),
    (["optim.lr=nan"], "optim.lr=nan is not valid: use a finite number"),
    (["optim.betas=[0.9,inf]"], "optim.betas=inf is not valid: use a finite number"),
    (["optim.momentum=0.9"], "optim.momentum=0.9 has no effect with optim=adam: only optim=sgd/rmsprop use it"),
    (["optim=sgd", "optim.betas=[0.5,0.9]"], "optim.betas=[0.5, 0.9] has no effect with optim=sgd"),
    (["sched.gamma=0.5"], "sched.gamma=0.5 has no effect with sched=constant"),
    (["eval=kfold", "eval.test_fraction=0.3"], "eval.test_fraction=0.3 has no effect with eval=kfold"),
    (["eval=kfold", "eval.k=1"], "eval.k=1 is not valid: use at least 2 folds"),
    (["trainer.early_stopping.monitor=val/rmse"], "trainer.early_stopping.monitor=val/rmse does not apply to a "
                                                  "binary target; use one of: val/loss, val/accuracy"),
    (["eval.metric=r2"], "eval.metric=r2 does not apply to a binary target"),
    (["dataset.positive=yes"], "dataset.positive='yes' is not a class of 'num'; its classes are: 0, 1"),
    (["loss.class_weights=[1,2,3]"], "loss.class_weights has 3 values; this binary target needs one per class"),
])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, train, overrides, needle):
    status, _, err = train(*overrides, *QUICK, f"hydra.run.dir={tmp_path}/run")
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_plateau_on_accuracy_is_refused_for_a_regression_target(tmp_path, train):
    data = _regression_csv(tmp_path)
    status, _, err = train("dataset=csv", f"dataset.path={data}", "dataset.target=y", "sched=plateau",
                           "sched.monitor=val/accuracy", *QUICK, f"hydra.run.dir={tmp_path}/run")
    assert status == 2
    assert "sched.monitor=val/accuracy does not apply to a regression target; use one of: val/loss, val/rmse" in err
    assert not (tmp_path / "run").exists()


def test_a_bad_override_answers_without_importing_torch(tmp_path):
    code = ("import sys; from runner.commands.cli import main; "
            f"rc = main(['train', 'optim.lr=-1', 'hydra.run.dir={tmp_path}/run']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"]
    assert out.stderr == "error: optim.lr=-1.0 is not valid: use a positive learning rate\n"


def test_refit_with_kfold_retrains_each_fold_on_its_train_and_val_rows(tmp_path, train):
    run = tmp_path / "run"
    assert train("eval=kfold", "eval.k=3", "eval.refit=true", *QUICK, f"hydra.run.dir={run}")[0] == 0
    splits = json.loads((run / "split_indices.json").read_text())
    assert len(splits) == 3
    for s in splits:
        assert s["val"] == [] and sorted(s["train"] + s["test"]) == list(range(303))
    assert (run / "checkpoints" / "refit.pt").exists()


# ---------------------------------------------------------------- run directories and status.json


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_a_used_run_directory_is_untouched_by_a_rejected_or_repeated_run(tmp_path, train):
    run = tmp_path / "run"
    assert train(*QUICK, "trainer.seeds=3", f"hydra.run.dir={run}")[0] == 0
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    before = _snapshot(run)
    for overrides in (["optim.lr=-1"], ["+optim.lrr=1"], []):
        status, _, err = train(*QUICK, *overrides, f"hydra.run.dir={run}")
        assert status == 2 and err.count("\n") == 1
    assert "already holds a run" in err and "overwrite=true" in err
    assert _snapshot(run) == before

    # overwrite=true replaces the run: nothing of the old one (3 members) is merged into the new one (1)
    assert train(*QUICK, "overwrite=true", f"hydra.run.dir={run}")[0] == 0
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == ["trainer.epochs=4"]
    assert len(list((run / "tensorboard" / "trainer.epochs=4").iterdir())) == 2  # curves and hparams
    assert json.loads((run / "results.json").read_text())["members"] == 1


def test_resuming_a_finished_run_is_refused_and_touches_nothing(tmp_path, train, capsys):
    run = tmp_path / "run"
    assert train(*QUICK, f"hydra.run.dir={run}")[0] == 0
    before = _snapshot(run)
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has finished (status.json: ok); there is nothing to resume" in err
    assert _snapshot(run) == before


def test_overwrite_never_empties_a_folder_that_is_not_a_run(tmp_path, train):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    status, _, err = train(*QUICK, "overwrite=true", f"hydra.run.dir={folder}")
    assert status == 2 and "not a run directory" in err
    assert (folder / "thesis.tex").read_text() == "precious" and len(list(folder.iterdir())) == 1


@pytest.mark.parametrize("where,needle", [("file", "is a file, not a directory"),
                                          ("/proc/runner-test/run", "cannot write the run directory")])
def test_an_unwritable_run_directory_is_one_line(tmp_path, train, where, needle):
    target = tmp_path / "taken"
    target.write_text("x")
    run_dir = target if where == "file" else where
    status, _, err = train(*QUICK, f"hydra.run.dir={run_dir}")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_a_run_that_cannot_write_its_files_says_so_and_does_not_look_complete(tmp_path, train, monkeypatch,
                                                                               capsys):
    import runner.finish

    real = runner.finish.write_reports

    def disk_full_after_results(run_dir, *args, **kwargs):
        real(run_dir, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "report.png"))

    monkeypatch.setattr(runner.finish, "write_reports", disk_full_after_results)
    run = tmp_path / "run"
    status, _, err = train(*QUICK, f"hydra.run.dir={run}")
    assert status == 2 and err.count("\n") == 1
    assert "No space left on device" in err and "is incomplete" in err
    record = json.loads((run / "status.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert not (run / "results.json").exists()
    capsys.readouterr()
    assert main(["report", str(run)]) == 2  # nothing there passes for a result
    report_err = capsys.readouterr().err
    assert "no finished run under" in report_err and "(failed: could not write" in report_err


def test_a_crash_after_the_start_is_recorded_in_the_run_directory(tmp_path, train, monkeypatch):
    import runner.engine.stacking

    def crash(*args, **kwargs):
        raise ZeroDivisionError("division by zero in the engine")

    monkeypatch.setattr(runner.engine.stacking, "fit", crash)
    run = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):  # a bug still raises, with its traceback
        train(*QUICK, f"hydra.run.dir={run}")
    record = json.loads((run / "status.json").read_text())
    assert record == {"status": "failed", "time": record["time"], "pid": os.getpid(), "started": record["started"],
                      "ended": record["ended"], "error": "ZeroDivisionError: division by zero in the engine", "job": [*QUICK]}
    assert record["started"] <= record["ended"]
    assert "Traceback" in (run / "error.log").read_text()


@pytest.mark.parametrize("after_epochs", [0, 1])
def test_ctrl_c_anywhere_is_one_line_and_leaves_a_true_status(tmp_path, train, monkeypatch, after_epochs):
    """Before training started the folder is put back as it was; after, status.json says interrupted, with the
    command that resumes it, and no results.json passes for a finished run."""
    import runner.engine.stacking

    def interrupt(model, data, cfg, loss, on_epoch, *args, **kwargs):
        for epoch in range(after_epochs):
            on_epoch(epoch, 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.engine.stacking, "fit", interrupt)
    run = tmp_path / "run"
    status, _, err = train(*QUICK, f"hydra.run.dir={run}")
    assert status == 130
    if after_epochs == 0:
        assert err.strip().splitlines() == ["interrupted by SIGINT before training started; nothing was written"]
        assert not run.exists()
    else:
        assert err.strip().splitlines() == [f"interrupted by SIGINT in {run}", f"resume with: runner resume {run}"]
        record = json.loads((run / "status.json").read_text())
        assert (record["status"], record["resume"]) == ("interrupted", f"runner resume {run}")
        assert not (run / "results.json").exists()


def test_a_sweep_with_failed_jobs_prints_its_table_and_exits_non_zero(tmp_path, train, monkeypatch):
    import runner.engine.stacking

    real = runner.engine.stacking.fit

    def crash_at_lr_002(model, data, cfg, *args, **kwargs):
        if cfg.optim.lr == 0.02:
            raise RuntimeError("boom")
        return real(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(runner.engine.stacking, "fit", crash_at_lr_002)
    sweep = tmp_path / "sweep"
    # one job at a time (the population launcher would train the two sgd jobs as one population)
    status, out, err = train("-m", "optim=sgd,adam", "optim.lr=0.01,0.02", "optim.momentum=0.5", *QUICK,
                             "hydra/launcher=basic", f"hydra.sweep.dir={sweep}")
    assert status == 1  # a crash outranks the user error
    statuses = {p.name: json.loads((p / "status.json").read_text()) for p in sweep.iterdir() if p.is_dir()}
    # jobs: 0 sgd 0.01, 1 sgd 0.02 (crash), 2 adam 0.01 and 3 adam 0.02 (momentum is sgd's)
    assert {k: v["status"] for k, v in statuses.items()} == {"0": "ok", "1": "failed", "2": "failed", "3": "failed"}
    assert statuses["1"]["error"] == "RuntimeError: boom"
    assert "has no effect with optim=adam" in statuses["2"]["error"]
    assert "1 run compared" in out and "3 jobs failed or unfinished, not ranked" in out.replace("\n", " ")
    assert "job 1 crashed (RuntimeError: boom)" in err and "job 2: optim.momentum=0.5 has no effect" in err


def test_a_sweep_over_targets_prints_a_table_for_each(tmp_path, train):
    data = _regression_csv(tmp_path, "two.csv", n=60)
    frame = pd.read_csv(data)
    frame["sick"] = (frame.x > 0).astype(int)
    frame.to_csv(data, index=False)
    status, out, _ = train("-m", "dataset=csv", f"dataset.path={data}", "dataset.target=y,sick", *QUICK,
                           f"hydra.sweep.dir={tmp_path}/sweep")
    assert status == 0
    flat = " ".join(out.split())
    assert "dataset two, target y, regression: 1 run compared" in flat
    assert "dataset two, target sick, binary: 1 run compared" in flat


def test_a_used_sweep_directory_is_refused(tmp_path, train):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    status, _, err = train("-m", "optim=sgd,adam", *QUICK, f"hydra.sweep.dir={sweep}")
    assert status == 2 and "hydra.sweep.dir" in err and "already used" in err
    assert [p.name for p in sweep.iterdir()] == ["0"]


def test_report_never_ranks_runs_on_different_data_together(tmp_path, capsys):
    from runner.errors import RunnerError
    from runner.evaluate.compare import compare

    runs = [("a", "heart", "binary", "test/accuracy", 0.8), ("b", "heart", "binary", "test/accuracy", 0.7),
            ("c", "diabetes", "regression", "test/rmse", 55.0)]
    for name, dataset, task, metric, mean in runs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"task": task, "dataset": dataset, "metrics": {
            metric: {"mean": mean, "se": 0.01, "ci95": [mean - 0.0196, mean + 0.0196], "n": 5}}}))
    with pytest.raises(RunnerError, match="different data or test splits and cannot be ranked together: dataset heart, binary"):
        compare([tmp_path])
    assert main(["report", str(tmp_path), "--format", "md"]) == 0
    out = capsys.readouterr().out
    heart = out.index("**dataset heart, binary: 2 runs compared by test accuracy ↑, best first**")
    diabetes = out.index("**dataset diabetes, regression: 1 run compared by test rmse ↓, best first**")
    assert heart < out.index("| ★ best | a |") < out.index("| b |") < diabetes
    assert main(["report", str(tmp_path), "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 different datasets, targets, tasks or test splits" in err


def test_report_groups_runs_scored_on_other_test_splits_apart(tmp_path, capsys):
    from runner.evaluate.compare import compare_by_data

    plans = {"a": {"name": "holdout", "test_fraction": 0.2, "split_seed": 0},
             "b": {"name": "holdout", "test_fraction": 0.2, "split_seed": 0},
             "c": {"name": "kfold", "k": 5, "repeats": 1, "split_seed": 0}}
    for name, ev in plans.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(json.dumps({"eval": ev}))
        (tmp_path / name / "results.json").write_text(json.dumps({"task": "binary", "dataset": "heart", "metrics": {
            "test/accuracy": {"mean": 0.8, "se": 0.01, "ci95": [0.78, 0.82], "n": 5}}}))
    groups = compare_by_data([tmp_path])
    assert [(c.data, [r["run"] for r in c.rows]) for c in groups] == [
        ("dataset heart, holdout (test 0.2), split seed 0", ["a", "b"]), ("dataset heart, 5-fold, split seed 0", ["c"])]


# ---------------------------------------------------------------- data values and labels


@pytest.mark.parametrize("column,values,needle", [
    ("x", [np.inf], "column 'x' of bad.csv holds inf on line 2 (1 such row)"),
    ("y", [-np.inf, -np.inf], "column 'y' of bad.csv holds -inf on line 2 (2 such rows)"),
    ("z", [1e308], "column 'z' of bad.csv holds 1e+308 on line 2"),
])
def test_infinite_and_overflowing_values_are_one_line(tmp_path, train, column, values, needle):
    data = _regression_csv(tmp_path, "bad.csv")
    frame = pd.read_csv(data)
    frame.loc[: len(values) - 1, column] = values
    frame.to_csv(data, index=False)
    status, _, err = train("dataset=csv", f"dataset.path={data}", "dataset.target=y", *QUICK,
                           f"hydra.run.dir={tmp_path}/run")
    assert status == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_large_finite_values_below_the_limit_train(tmp_path, train):
    from runner.data.loading import MAX_MAGNITUDE

    data = _regression_csv(tmp_path, "big.csv")
    frame = pd.read_csv(data)
    frame["x"] *= MAX_MAGNITUDE / 10
    frame.to_csv(data, index=False)
    run = tmp_path / "run"
    assert train("dataset=csv", f"dataset.path={data}", "dataset.target=y", *QUICK, f"hydra.run.dir={run}")[0] == 0
    results = json.loads((run / "results.json").read_text())
    assert np.isfinite(results["metrics"]["test/rmse"]["mean"])


def test_regression_baselines_are_named_for_what_they_are_and_the_dataset_for_its_file(tmp_path, train):
    data = _regression_csv(tmp_path, "housing.csv")
    run = tmp_path / "run"
    assert train("dataset=csv", f"dataset.path={data}", "dataset.target=y", "eval.baselines=[logreg,knn]",
                 *QUICK, f"hydra.run.dir={run}")[0] == 0
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "housing" and results["target"] == "y" and "positive" not in results
    assert set(results["baselines"]) == {"mean", "linear", "knn"}


@pytest.mark.parametrize("positive", [None, "no", "yes"])
def test_the_positive_class_is_reported_and_can_be_chosen(tmp_path, train, positive):
    rng = np.random.default_rng(1)
    x = rng.normal(size=80)
    frame = pd.DataFrame({"x": x, "z": rng.normal(size=80), "sick": np.where(x + rng.normal(size=80) > 0, "yes", "no")})
    frame.to_csv(tmp_path / "clinic.csv", index=False)
    run = tmp_path / "run"
    choice = [] if positive is None else [f"dataset.positive={positive}"]
    status, out, _ = train("dataset=csv", f"dataset.path={tmp_path / 'clinic.csv'}", "dataset.target=sick",
                           *choice, *QUICK, f"hydra.run.dir={run}")
    assert status == 0
    expected = positive or "yes"  # default: the second class in sorted order
    assert f"(positive class: {expected})" in out
    results = json.loads((run / "results.json").read_text())
    assert results["positive"] == expected
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    truth = preds.y_true == expected
    assert results["metrics"]["test/recall"]["mean"] == pytest.approx(
        recall_score(preds.y_true, preds.y_pred, pos_label=expected))
    assert results["metrics"]["test/roc_auc"]["mean"] == pytest.approx(roc_auc_score(truth, preds[f"p_{expected}"]))


def test_heart_says_its_positive_class_is_disease(tmp_path, train):
    status, out, _ = train(*QUICK, f"hydra.run.dir={tmp_path}/run")
    assert status == 0 and "(positive class: 1 = num > 0)" in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["positive"] == "1"


def test_an_id_like_text_column_is_dropped_and_the_header_says_so(tmp_path, train):
    data = _regression_csv(tmp_path, "ids.csv", n=120, patient=[f"P{i:04d}" for i in range(120)])
    status, out, _ = train("dataset=csv", f"dataset.path={data}", "dataset.target=y", *QUICK,
                           f"hydra.run.dir={tmp_path}/run")
    assert status == 0 and "dropped: patient (text, unique per row)" in " ".join(out.split())
    kept = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["features"]
    assert not any(name.startswith("patient") for name in kept)
    status, out, _ = train("dataset=csv", f"dataset.path={data}", "dataset.target=y", "dataset.keep=[patient]",
                           *QUICK, f"hydra.run.dir={tmp_path}/run2")
    assert status == 0 and "dropped" not in out
    kept = torch.load(tmp_path / "run2" / "checkpoints" / "best.pt", weights_only=True)["features"]
    assert sum(name.startswith("patient") for name in kept) >= 100  # one-hot: the user asked for it

