"""Replacing a run is one transaction, a job writes only its own folder, and every exit leaves a true status.
Each test goes through the CLI and checks the exit status, the one line, and that every file of the earlier
finished run is byte for byte as it was (its .lock aside: the lock records the pid of whoever holds it)."""

import errno
import json
import os
import signal
from pathlib import Path

import pytest

from runner.commands.cli import main
from test_run_folders import QUICK, copy_of, finished, hashes  # noqa: F401 (finished: the module's fixture)


def kept(folder: Path) -> dict[str, str]:
    """hashes() without the lock file."""
    return {name: digest for name, digest in hashes(folder).items() if Path(name).name != ".lock"}


def once(action):
    """A function doing `action()` the first time it is called, nothing later."""
    done = []

    def call(*args, **kwargs):
        if not done:
            done.append(True)
            action()

    return call


def signal_self(signum):
    """A function sending `signum` to this process, as `kill` would."""
    return lambda: os.kill(os.getpid(), signum)


def with_fit_state(train, monkeypatch, run: Path) -> None:
    """A run stopped by Ctrl-C in its second epoch, its fit state saved at the end of the first (as a user
    would leave an interrupted run, resumable)."""
    import runner.engine.stacking

    real = runner.engine.stacking.fit

    def stop_in_second(model, data, cfg, loss, on_epoch, *args, **kwargs):
        def call(epoch, active):
            on_epoch(epoch, active)
            if epoch == 1:
                raise KeyboardInterrupt

        return real(model, data, cfg, loss, call, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(runner.engine.stacking, "fit", stop_in_second)
        status, _, _ = train(*QUICK, "trainer.checkpoint_every=1", f"hydra.run.dir={run}")
    assert status == 130 and (run / "checkpoints" / "fit_state.pt").is_file()


# --- 1. replacing a run is one transaction ----------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("where", ["while the old run moves aside", "while Hydra writes .hydra/"])
def test_a_signal_right_after_overwrite_moved_the_old_run_puts_it_back(tmp_path, finished, train, monkeypatch,
                                                                        signum, where):
    import hydra.core.utils

    run = copy_of(finished, tmp_path / "run")
    before = kept(run)
    if where == "while the old run moves aside":  # the signal waits until the claim's moves are whole
        real = os.rename
        sent = once(signal_self(signum))

        def rename_then_signal(src, dst):
            real(src, dst)
            sent()

        monkeypatch.setattr(os, "rename", rename_then_signal)
    else:
        real_save = hydra.core.utils._save_config
        sent = once(signal_self(signum))
        monkeypatch.setattr(hydra.core.utils, "_save_config", lambda *a: (sent(), real_save(*a)))
    status, _, err = train(*QUICK, "optim.lr=0.01", f"hydra.run.dir={run}", "overwrite=true")
    name = signal.Signals(signum).name
    assert status == 128 + signum
    assert err.strip() == f"interrupted by {name} before training started; the earlier run in {run} is back"
    assert kept(run) == before and [p.name for p in tmp_path.iterdir()] == ["run"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_every_member_diverging_in_the_first_epoch_brings_the_old_run_back(tmp_path, train, monkeypatch):
    run = tmp_path / "run"
    with_fit_state(train, monkeypatch, run)
    before = kept(run)
    status, _, err = train(*QUICK, "optim=sgd", "optim.lr=1e9", f"hydra.run.dir={run}", "overwrite=true")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: every member diverged") and err.strip().endswith(
        f"; the earlier run in {run} is back")
    assert kept(run) == before and [p.name for p in tmp_path.iterdir()] == ["run"]
    status, _, _ = train(*QUICK, "trainer.checkpoint_every=1", f"hydra.run.dir={run}", "trainer.resume=true")
    assert status == 0  # the old run still resumes


def test_an_error_after_training_brings_the_old_run_back(tmp_path, finished, train, monkeypatch):
    import runner.experiment

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "predictions.csv"))

    run = copy_of(finished, tmp_path / "run")
    before = kept(run)
    monkeypatch.setattr(runner.experiment, "finish", disk_full)
    status, _, err = train(*QUICK, "optim.lr=0.01", f"hydra.run.dir={run}", "overwrite=true")
    assert status == 2 and err.strip() == (f"error: could not write {run / 'predictions.csv'}: No space left on "
                                           f"device; the earlier run in {run} is back")
    assert kept(run) == before and [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("saved", [False, True])
def test_sigterm_after_training_keeps_the_old_run_until_the_new_one_is_resumable(tmp_path, finished, train,
                                                                                 monkeypatch, saved):
    """Stopped while scoring: without a saved fit state the old run comes back; with one, the new run is what
    resume continues and the old one is gone (nothing hidden aside is left behind either way)."""
    import runner.experiment

    real = runner.experiment.finish

    def killed_while_finishing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    run = copy_of(finished, tmp_path / "run")
    before = kept(run)
    monkeypatch.setattr(runner.experiment, "finish", killed_while_finishing)
    every = ["trainer.checkpoint_every=1"] if saved else []
    status, _, err = train(*QUICK, *every, "optim.lr=0.01", f"hydra.run.dir={run}", "overwrite=true")
    assert status == 143 and [p.name for p in tmp_path.iterdir()] == ["run"]
    if saved:
        assert err.strip().splitlines() == [f"interrupted by SIGTERM in {run}", f"resume with: runner resume {run}"]
        assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
        assert "optim.lr=0.01" in (run / ".hydra" / "overrides.yaml").read_text()
    else:
        assert err.strip() == (f"interrupted by SIGTERM before the new run saved a state to resume from; "
                               f"the earlier run in {run} is back")
        assert kept(run) == before


# --- 2. files runner did not write, anywhere in the folder --------------------------------------------------------

@pytest.mark.parametrize("planted, shown", [
    ("checkpoints/mine.txt", "checkpoints/mine.txt"),
    ("checkpoints/old/best.pt", "checkpoints/old/"),
    (".hydra/notes.yaml", ".hydra/notes.yaml"),
    ("tensorboard/notes.md", "tensorboard/notes.md"),
    ("tensorboard/RUN/member_0/plot.png", "tensorboard/RUN/member_0/plot.png"),
    ("tensorboard/RUN/member_0/deeper/events.out.tfevents.1", "tensorboard/RUN/member_0/deeper/"),
])
def test_overwrite_refuses_files_runner_did_not_write_at_any_depth(tmp_path, finished, train, planted, shown):
    run = copy_of(finished, tmp_path / "run")
    tensorboard_run = next((run / "tensorboard").iterdir()).name
    path = run / planted.replace("RUN", tensorboard_run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mine")
    before = kept(run)
    status, _, err = train(*QUICK, f"hydra.run.dir={run}", "overwrite=true")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert (f"holds files runner did not write ({shown.replace('RUN', tensorboard_run)}); overwrite=true replaces "
            "only what runner wrote") in err, err
    assert kept(run) == before and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_overwrite_replaces_a_run_with_leftover_temporary_files(tmp_path, finished, train):
    run = copy_of(finished, tmp_path / "run")
    (run / "checkpoints" / "fit_state.pt.tmp").write_bytes(b"half")  # a kill mid-write leaves these
    (run / ".status.json.x1y2.tmp").write_bytes(b"half")
    status, _, _ = train(*QUICK, "optim.lr=0.01", f"hydra.run.dir={run}", "overwrite=true")
    assert status == 0 and not (run / "checkpoints" / "fit_state.pt.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --- 3. a job writes only its own folder; 4. (sweeps) every exit leaves a true status -----------------------------

SWEEP = ["-m", "optim.lr=0.1,0.01", *QUICK]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished two-job sweep (default job folders), trained once for the module; tests copy it."""
    sweep = tmp_path_factory.mktemp("sweep") / "sw"
    assert main(["train", *SWEEP, f"hydra.sweep.dir={sweep}"]) == 0
    return sweep


@pytest.mark.parametrize("subdir, needle", [
    ("${trainer.epochs}", "hydra.sweep.subdir=${trainer.epochs} gives jobs 0 and 1 one folder ({sweep}/4)"),
    ("${optim.name}", "hydra.sweep.subdir=${optim.name} gives jobs 0 and 1 one folder"),
    ("x${hydra.job.num}/..", "hydra.sweep.subdir=x${hydra.job.num}/.. puts job 0 in {sweep}, not a folder inside "
                             "the sweep folder {sweep}"),
    ("/tmp/elsewhere-${hydra.job.num}", "puts job 0 in /tmp/elsewhere-0, not a folder inside the sweep folder"),
])
@pytest.mark.parametrize("launcher", ["basic", "population"])
def test_jobs_given_one_folder_or_none_of_their_own_are_refused_before_anything_is_written(
        tmp_path, finished_sweep, train, subdir, needle, launcher):
    sweep = copy_of(finished_sweep, tmp_path / "sw")
    before = kept(sweep)
    status, out, err = train(*SWEEP, f"hydra.sweep.dir={sweep}", f"hydra.sweep.subdir={subdir}",
                             f"hydra/launcher={launcher}")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert needle.replace("{sweep}", str(sweep)) in err and err.strip().endswith(
        "give each job its own folder (the default is hydra.sweep.subdir=${hydra.job.num})")
    assert kept(sweep) == before and sorted(p.name for p in tmp_path.iterdir()) == ["sw"]


@pytest.mark.parametrize("entry", ["cli", "python"])
def test_a_sweep_folder_spelled_with_dot_dot_is_one_folder(tmp_path, train, entry):
    """Its launcher and its jobs name each job's folder differently (`sw/../sw/0`, `sw/0`): one lock, one job."""
    if entry == "cli":
        status, _, err = train(*SWEEP, f"hydra.sweep.dir={tmp_path}/sub/../sw")
        assert status == 0, err
    else:
        import runner

        assert len(runner.sweep("optim.lr=0.1,0.01", *QUICK, sweep_dir=tmp_path / "sub" / ".." / "sw").runs) == 2
    for job in ("0", "1"):
        assert json.loads((tmp_path / "sw" / job / "status.json").read_text())["status"] == "ok"


def test_a_signal_past_a_sweep_jobs_handler_leaves_every_job_interrupted(tmp_path, train, monkeypatch):
    """Jobs stopped between their launcher's claim and their own handler (here: while Hydra writes the first job's
    .hydra/ after the group's fit): each folder says interrupted, never running, and the sweep exits 143."""
    import hydra.core.utils

    real_save = hydra.core.utils._save_config
    sent = once(signal_self(signal.SIGTERM))
    monkeypatch.setattr(hydra.core.utils, "_save_config", lambda *a: (sent(), real_save(*a)))
    status, _, err = train(*SWEEP, f"hydra.sweep.dir={tmp_path}/sw")
    assert status == 143 and err.strip().splitlines()[-1].startswith("resume with the same command: runner train")
    for job in ("0", "1"):
        assert json.loads((tmp_path / "sw" / job / "status.json").read_text())["status"] == "interrupted"


# --- 4. every exit leaves a true status ------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_the_first_second_leaves_nothing_behind(tmp_path, train, monkeypatch, signum):
    import hydra.core.utils

    real_save = hydra.core.utils._save_config
    sent = once(signal_self(signum))
    monkeypatch.setattr(hydra.core.utils, "_save_config", lambda *a: (sent(), real_save(*a)))
    status, _, err = train(*QUICK, f"hydra.run.dir={tmp_path}/run")
    name = signal.Signals(signum).name
    assert status == 128 + signum
    assert err.strip() == f"interrupted by {name} before training started; nothing was written"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_full_disk_before_training_leaves_a_true_folder(tmp_path, finished, train, monkeypatch, overwrite):
    """Hydra cannot write .hydra/ (8 KiB free): one line, and the folder is what it was (absent, or the earlier run)."""
    import hydra.core.utils

    run = copy_of(finished, tmp_path / "run") if overwrite else tmp_path / "run"
    before = kept(run) if overwrite else None

    def full(cfg, filename, output_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / filename))

    monkeypatch.setattr(hydra.core.utils, "_save_config", full)
    status, _, err = train(*QUICK, f"hydra.run.dir={run}", *(["overwrite=true"] if overwrite else []))
    assert status == 2
    assert err.strip() == f"error: cannot write {run / '.hydra' / 'config.yaml'}: No space left on device"
    if overwrite:
        assert kept(run) == before and [p.name for p in tmp_path.iterdir()] == ["run"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_train_log_on_a_full_disk_drops_the_line_without_a_traceback(tmp_path, capsys):
    """On a disk with a few KiB left, train.log's handler fails before the run's own error: one line stays one."""
    import logging

    from runner.console import LogFile

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    handler = LogFile(tmp_path / "train.log")
    handler.stream.close()
    handler.stream = Full()
    handler.emit(logging.LogRecord("runner", logging.INFO, __file__, 1, "a line", (), None))
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # a subprocess per example: about 5 s each
def test_signals_at_random_times_during_overwrite_never_lose_the_old_run(tmp_path_factory, finished):
    """SIGTERM or SIGINT 0 to 1.5 s after the old run moved aside (before training, while training, while scoring):
    the exit is 128 + the signal (or 0 if the run was done), the message is true, nothing is left aside, and the
    folder holds either the earlier run, byte for byte, or a new run that is finished or resumable."""
    import subprocess
    import sys
    import time

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.sampled_from([signal.SIGTERM, signal.SIGINT]), st.floats(0, 1.5), st.booleans())
    def check(signum, delay, every_epoch):
        root = tmp_path_factory.mktemp("overwrite")
        run = copy_of(finished, root / "run")
        before = kept(run)
        every = ["trainer.checkpoint_every=1"] if every_epoch else []
        job = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "train", *QUICK[1:], "trainer.epochs=300",
                                *every, "optim.lr=0.01", f"hydra.run.dir={run}", "overwrite=true"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while job.poll() is None and time.time() < deadline and not any(
                p.name.startswith(".run.replaced-") for p in root.iterdir()):
            time.sleep(0.002)
        time.sleep(delay)
        job.send_signal(signum)
        _, err = job.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert sorted(p.name for p in root.iterdir()) == ["run"], err
        record = json.loads((run / "status.json").read_text())
        if job.returncode == 0:
            assert record["status"] == "ok" and "optim.lr=0.01" in (run / ".hydra" / "overrides.yaml").read_text()
            return
        assert job.returncode == 128 + signum, err
        if kept(run) == before:
            assert lines[-1].endswith(f"the earlier run in {run} is back"), err
        else:
            assert record["status"] == "interrupted" and (run / "checkpoints" / "fit_state.pt").is_file(), err
            assert lines[-1] == f"resume with: runner resume {run}", err

    check()


def test_sigterm_while_the_config_is_checked_is_one_true_line(tmp_path, train, monkeypatch):
    import runner.commands.train as command

    real = command.checked_config
    sent = once(signal_self(signal.SIGTERM))
    monkeypatch.setattr(command, "checked_config", lambda *a, **k: (sent(), real(*a, **k))[1])
    status, _, err = train(*QUICK, f"hydra.run.dir={tmp_path}/run")
    assert status == 143 and err.strip() == "interrupted by SIGTERM before training started; nothing was written"
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_while_the_command_starts_is_one_true_line(tmp_path):
    """Before `runner train` has imported its libraries or written anything: 143 and one line, not a silent kill."""
    import subprocess
    import sys
    import time

    job = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "train", *QUICK,
                            f"hydra.run.dir={tmp_path}/run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    time.sleep(0.3)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143
    assert err.strip() == "interrupted by SIGTERM before training started; nothing was written"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs with 8 KiB free (root only: skipped where mounting is not allowed)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "fill").write_bytes(b"\0" * (free - 8192))
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # a log handler may still hold a file open


def test_a_disk_with_8_kib_free_leaves_one_line_and_no_folder(small_disk, train):
    status, _, err = train(*QUICK, f"hydra.run.dir={small_disk}/run")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err
    assert sorted(p.name for p in small_disk.iterdir()) == ["fill"]
