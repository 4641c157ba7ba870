"""A run folder is data: runner deletes only what it wrote, after every check passed, one writer at a time, and
never executes or writes through what a folder from elsewhere says. Each test goes through the CLI and checks
the exit status, the one line, and that every byte of what was there before is unchanged."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runner.commands.cli import main

QUICK = ["trainer.epochs=4", "trainer.progress=false", "plots=false"]


def hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links as their target text) by relative path: its SHA-256."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(folder))] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run, trained once for the module; tests copy it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *QUICK, f"hydra.run.dir={run}"]) == 0
    return run


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run interrupted after its first epoch, trained once for the module; tests copy it."""
    import runner.engine.stacking

    from conftest import stop_after_first_epoch

    run = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", sys.argv[:])
        patch.setattr(runner.engine.stacking, "fit", stop_after_first_epoch(runner.engine.stacking.fit))
        assert main(["train", *QUICK, f"hydra.run.dir={run}"]) == 130
    return run


def copy_of(run: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(run, where, symlinks=True)
    return where


def interrupted(train, monkeypatch, run: Path, *extra) -> None:
    """A run stopped by Ctrl-C after its first epoch (status interrupted), as a user would leave it."""
    import runner.engine.stacking

    from conftest import stop_after_first_epoch

    stop_after_one = stop_after_first_epoch(runner.engine.stacking.fit)
    with monkeypatch.context() as patch:
        patch.setattr(runner.engine.stacking, "fit", stop_after_one)
        status, _, _ = train(*QUICK, *extra, f"hydra.run.dir={run}")
    assert status == 130 and json.loads((run / "status.json").read_text())["status"] == "interrupted"


def resume(capsys, run: Path) -> tuple[int, str]:
    status = main(["resume", str(run)])
    return status, capsys.readouterr().err


def test_resume_never_replays_hydra_keys_from_the_folder(tmp_path, train, monkeypatch, capsys):
    run = tmp_path / "run"
    interrupted(train, monkeypatch, run)
    secret, target = tmp_path / "secret.txt", tmp_path / "elsewhere" / "stolen.txt"
    secret.write_text("x")
    target.parent.mkdir()
    saved = run / ".hydra" / "overrides.yaml"
    planted = [f"+hydra.callbacks.x._target_=shutil.copyfile", f"+hydra.callbacks.x.src={secret}",
               f"+hydra.callbacks.x.dst={target}", "hydra/launcher=basic"]
    saved.write_text(yaml.safe_dump(yaml.safe_load(saved.read_text()) + planted))
    status, err = resume(capsys, run)
    assert status == 0
    assert not target.exists()
    assert err.startswith(f"ignored in {saved} (runner resumes only its own config keys, and a group only by an "
                          f"option's name): {' '.join(planted)}")
    assert json.loads((run / "status.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("key, value", [
    ("model", "../../../../../../../..{run}/.hydra/e"), ("model", "{run}/.hydra/e"),
    ("model", "mlp/../../../{run}/.hydra/e"), ("model", "[mlp,'{run}/.hydra/e']"),
    ("+experiment", "../../../../../../../..{run}/.hydra/e"), ("model/x", "../../../../../../../..{run}/.hydra/e"),
    ("hparams_search", "{run}/.hydra/e"),
])
def test_a_group_value_from_the_folder_never_names_a_file(tmp_path, stopped, capsys, key, value):
    """A config group's value from .hydra/overrides.yaml is an option's name or nothing: a path would make Hydra
    load that YAML, whose `# @package _global_` could set hydra.callbacks, instantiated before any check."""
    run = copy_of(stopped, tmp_path / "run")
    target = tmp_path / "stolen.txt"
    (run / ".hydra" / "e.yaml").write_text(f"# @package _global_\nhydra:\n  callbacks:\n    x:\n"
                                           f"      _target_: shutil.copyfile\n      src: {run / 'status.json'}\n"
                                           f"      dst: {target}\n")
    saved = run / ".hydra" / "overrides.yaml"
    planted = f"{key}={value.format(run=run)}"
    saved.write_text(yaml.safe_dump(yaml.safe_load(saved.read_text()) + [planted]))
    status, err = resume(capsys, run)
    assert not target.exists()
    assert err.splitlines()[0] == (f"ignored in {saved} (runner resumes only its own config keys, and a group only "
                                   f"by an option's name): {planted}")
    assert status == 0 and json.loads((run / "status.json").read_text())["status"] == "ok"


def test_a_group_value_may_name_an_option_of_this_commands_config_dir(tmp_path, train, monkeypatch, capsys):
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "tiny.yaml").write_text("defaults:\n  - mlp\n  - _self_\nhidden: [3]\n")
    run = tmp_path / "run"
    interrupted(train, monkeypatch, run, f"--config-dir={mine}", "model=tiny")
    assert main(["resume", str(run)]) == 2  # without the folder, model=tiny is ignored: not the run it was
    assert "other values of model.hidden" in capsys.readouterr().err
    assert main(["resume", str(run), "--config-dir", str(mine)]) == 0
    assert "ignored" not in capsys.readouterr().err
    assert json.loads((run / "status.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("content, needle", [
    ("- !!python/object/apply:os.system ['touch {pwned}']\n", "cannot read"),
    ("a: 1\n", "is not a list of overrides"),
    ("- [1, 2]\n", "is not a list of overrides"),
    ("- 'trainer.epochs=4\n", "cannot read"),
])
def test_a_foreign_overrides_file_is_one_line_and_runs_nothing(tmp_path, finished, capsys, content, needle):
    run = copy_of(finished, tmp_path / "run")
    pwned = tmp_path / "pwned"
    (run / ".hydra" / "overrides.yaml").write_text(content.replace("{pwned}", str(pwned)))
    (run / "status.json").write_text(json.dumps({"status": "interrupted"}))
    before = hashes(run)
    status, err = resume(capsys, run)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert not pwned.exists() and hashes(run) == before


def test_a_symbolic_link_in_the_folder_is_refused_and_never_written_through(tmp_path, train, monkeypatch, capsys):
    run = tmp_path / "run"
    interrupted(train, monkeypatch, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run / "status.json.tmp").symlink_to(victim)
    before = hashes(run)
    status, err = resume(capsys, run)
    assert status == 2 and err.strip() == (f"error: {run / 'status.json.tmp'} is a symbolic link; a run folder holds "
                                           "only files runner wrote and it never writes through links (remove the "
                                           "link)")
    assert victim.read_text() == "keep me" and hashes(run) == before


@pytest.mark.parametrize("bad, needle", [
    ("eval=kfold", "eval.k=1000"),  # needs the data: 303 rows
    ("avg=ema", "avg.decay=1.5"),
    ("trainer.device=cuda", None),
    ("loss=mse", None),
    ("model=cnn", None),
])
def test_a_refused_run_leaves_the_old_run_and_writes_nothing(tmp_path, finished, train, bad, needle):
    import torch

    if bad == "trainer.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = [bad] + ([needle] if needle else [])
    run = copy_of(finished, tmp_path / "run")
    before = hashes(run)
    status, _, err = train(*QUICK, *args, f"hydra.run.dir={run}", "overwrite=true")
    assert status == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert hashes(run) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing moved aside is left behind
    fresh = tmp_path / "fresh"
    status, _, _ = train(*QUICK, *args, f"hydra.run.dir={fresh}")
    assert status == 2 and not fresh.exists()


def test_overwrite_replaces_a_finished_run_once_training_starts(tmp_path, finished, train):
    run = copy_of(finished, tmp_path / "run")
    status, _, _ = train(*QUICK, "optim.lr=0.01", f"hydra.run.dir={run}", "overwrite=true")
    assert status == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert "optim.lr=0.01" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize("where", ["cwd", "parent", "home"])
def test_the_current_folder_its_parents_and_home_are_never_run_folders(tmp_path, train, monkeypatch, where):
    work = tmp_path / "project" / "src"
    work.mkdir(parents=True)
    (work / "main.py").write_text("print('mine')\n")
    (work / "results.json").write_text("{}")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work))
    target = {"cwd": ".", "parent": str(tmp_path / "project"), "home": str(work)}[where]
    before = hashes(tmp_path)
    status, _, err = train(*QUICK, f"hydra.run.dir={target}", "overwrite=true")
    assert status == 2 and "never a run folder" in err and len(err.strip().splitlines()) == 1
    assert hashes(tmp_path) == before


def test_overwrite_refuses_a_folder_with_files_runner_did_not_write(tmp_path, finished, train):
    run = copy_of(finished, tmp_path / "run")
    (run / "notes.txt").write_text("my notes")
    before = hashes(run)
    status, _, err = train(*QUICK, f"hydra.run.dir={run}", "overwrite=true")
    assert status == 2 and "holds files runner did not write (notes.txt)" in err
    assert hashes(run) == before


def test_sweep_jobs_given_one_folder_are_refused(tmp_path, train):
    status, _, err = train("-m", *QUICK, "optim.lr=0.1,0.01", f"hydra.sweep.dir={tmp_path}/s",
                           "hydra.sweep.subdir=same")
    assert status == 2 and "hydra.sweep.subdir=same gives every job the same folder" in err
    assert not (tmp_path / "s").exists()


def test_a_second_writer_is_refused_and_a_dead_one_never_blocks(tmp_path, train, monkeypatch, capsys):
    run = tmp_path / "run"
    interrupted(train, monkeypatch, run)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run / '.lock')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
        "print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    before = hashes(run)
    try:
        status, err = resume(capsys, run)
    finally:
        holder.kill()
        holder.wait()
    assert status == 2 and err.strip() == (f"error: {run} is being written by process {holder.pid}; wait for it to "
                                           "finish (or stop it) and try again")
    assert hashes(run) == before
    status, err = resume(capsys, run)  # the holder is dead: the kernel released its lock
    assert status == 0


def test_resume_with_other_values_is_refused_naming_the_keys(tmp_path, train, monkeypatch):
    run = tmp_path / "run"
    interrupted(train, monkeypatch, run)
    before = hashes(run)
    status, _, err = train(*QUICK, "optim.lr=0.01", f"hydra.run.dir={run}", "trainer.resume=true")
    assert status == 2 and "other values of optim.lr (0.001 -> 0.01)" in err
    assert hashes(run) == before


def test_sigterm_after_training_leaves_a_resumable_run(tmp_path, train, monkeypatch, capsys):
    import runner.experiment

    real = runner.experiment.finish

    def killed_while_finishing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return real(*args, **kwargs)

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(runner.experiment, "finish", killed_while_finishing)
        status, _, err = train(*QUICK, "trainer.checkpoint_every=1", f"hydra.run.dir={run}")
    assert status == 143
    assert err.strip().splitlines() == [f"interrupted by SIGTERM in {run}", f"resume with: runner resume {run}"]
    record = json.loads((run / "status.json").read_text())
    assert record["status"] == "interrupted" and not (run / "results.json").exists()
    assert (run / "checkpoints" / "fit_state.pt").exists()  # kept until the run is finished
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # nothing left installed in this process
    status, _ = resume(capsys, run)
    assert status == 0 and not (run / "checkpoints" / "fit_state.pt").exists()


def test_a_full_disk_leaves_a_true_status_and_no_temporary_file(tmp_path, train, monkeypatch):
    from runner import rundir

    real = rundir.write_atomic

    def full(path, data):
        if Path(path).name in ("status.json",) and json.loads(data).get("status") != "running":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "predictions.csv"))

    import runner.finish

    monkeypatch.setattr(rundir.folder, "write_atomic", full)
    monkeypatch.setattr(runner.finish.artifacts, "predictions_frame", no_space)
    run = tmp_path / "run"
    status, _, err = train(*QUICK, f"hydra.run.dir={run}")
    assert status == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    text = (run / "status.json").read_text()
    record = json.loads(text)
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert text == json.dumps(record, indent=2) + "\n"  # rewritten in place, and no padding for `cat` to show
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("override, needle", [
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0 is not valid: use a number of epochs >= 1"),
    ("model.hidden=[100000,100000]", "GiB available: make the model or the population smaller"),
    ("optim.lr=${nope.x}", "optim.lr: Interpolation key 'nope.x' not found"),
    ("dataset.target=my col(", "quote a value holding spaces or special characters"),
])
def test_values_that_used_to_raise_are_one_line(tmp_path, train, override, needle):
    status, _, err = train(*QUICK, override, f"hydra.run.dir={tmp_path}/run")
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_a_stopped_population_sweep_keeps_its_group_state_and_resumes_it(tmp_path, train):
    """SIGTERM in the middle of a group's fit: every job says interrupted, the summary lists them, the exit is
    143; the same command again continues the group from its saved epoch and ends as an unbroken sweep."""
    import torch

    sweep = ["-m", "optim.lr=0.01,0.003", "trainer.epochs=400", "trainer.early_stopping.patience=null",
             "trainer.checkpoint_every=1", "trainer.progress=false", "plots=false"]
    stopped = tmp_path / "stopped"
    job = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "train", *sweep, f"hydra.sweep.dir={stopped}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(stopped.glob("0/checkpoints/group_*_state.pt")) and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143, err
    assert err.strip().splitlines()[-2:] == [
        f"interrupted by SIGTERM; fit state saved in {stopped / '0'}",
        f"resume with the same command: runner train {' '.join(sweep)} hydra.sweep.dir={stopped}"]
    for name in ("0", "1"):
        assert json.loads((stopped / name / "status.json").read_text())["status"] == "interrupted"
    assert "interrupted" in (stopped / "summary.csv").read_text()
    state = next(stopped.glob("0/checkpoints/group_*_state.pt"))
    saved_epoch = torch.load(state, weights_only=True)["epoch"]
    assert 0 <= saved_epoch < 399
    status, _, _ = train(*sweep, f"hydra.sweep.dir={stopped}")
    assert status == 0 and not state.exists()
    status, _, _ = train(*sweep, f"hydra.sweep.dir={tmp_path}/unbroken")
    assert status == 0
    for name in ("0", "1"):
        resumed, unbroken = (json.loads((d / name / "results.json").read_text())
                             for d in (stopped, tmp_path / "unbroken"))
        resumed.pop("timing"), unbroken.pop("timing")
        assert resumed == unbroken


def test_a_folder_given_as_the_data_file_says_it_is_a_folder(tmp_path, train):
    status, _, err = train(*QUICK, "dataset=csv", f"dataset.path={tmp_path}", "dataset.target=y",
                           f"hydra.run.dir={tmp_path}/run")
    assert status == 2 and err.strip() == (f"error: dataset.path={tmp_path} is a folder; give a CSV file "
                                           "(dataset=images reads folders)")


def test_a_config_dir_overrides_the_shipped_files_and_its_mistakes_name_the_file(tmp_path, capsys):
    mine = tmp_path / "conf"
    (mine / "trainer").mkdir(parents=True)
    (mine / "trainer" / "default.yaml").write_text("epochs: 2\npatience_typo: 1\n")
    run = tmp_path / "run"
    assert main(["train", "--config-dir", str(mine), "trainer.progress=false", "plots=false",
                 f"hydra.run.dir={run}"]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: {mine / 'trainer' / 'default.yaml'}: unknown key 'trainer.patience_typo'; valid keys "
                    "in 'trainer': epochs, batch_size, seeds, seed, device, precision, threads, stack, workers, "
                    "memory_gb, progress, checkpoint_every, resume, early_stopping, grad_clip")
    (mine / "trainer" / "default.yaml").write_text("epochs: [2\n")
    assert main(["train", f"--config-dir={mine}", f"hydra.run.dir={run}"]) == 2
    assert "default.yaml, line 2: not valid YAML" in capsys.readouterr().err
    assert main(["train", "-cd", str(tmp_path / "nope"), f"hydra.run.dir={run}"]) == 2
    assert "--config-dir" in capsys.readouterr().err and not run.exists()

    (mine / "trainer" / "default.yaml").write_text("epochs: 2\n")
    assert main(["train", "-cd", str(mine), "trainer.progress=false", "plots=false", f"hydra.run.dir={run}"]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"]["mean_trained"] == 2
