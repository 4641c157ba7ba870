"""Groups of members trained side by side in worker processes: the same results as one after another, the
progress of all of them, what ends a worker (an error, a kill, a stop signal) reaching the run, and a resume
taking the groups its saved states name."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from runner.config.schema import Config, EarlyStoppingConfig, ModelConfig, OptimConfig
from runner.engine import stacking
from runner.engine.inputs import MemberInputs
from runner.engine.resume import FitCheckpoint
from runner.engine.rows import PopulationData
from runner.engine.stacking import fit_in_groups
from runner.errors import RunnerError
from runner.models import build_model
from runner.rundir.layout import fit_state_part

SEEDS = [3, 7, 11, 13, 17]


def _population(epochs=6):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(80, 6, generator=g), torch.randint(0, 2, (80,), generator=g).float()
    rows = [(np.arange(5 * e, 50 + 5 * e), np.arange(70, 80)) for e in range(len(SEEDS))]
    cfg = Config(model=ModelConfig(hidden=[8], dropout=0.2), optim=OptimConfig(lr=0.05))
    cfg.trainer.epochs, cfg.trainer.batch_size = epochs, 16
    cfg.trainer.early_stopping = EarlyStoppingConfig(patience=2)
    model = build_model(cfg.model, len(SEEDS), (6,), 2)
    model.initialize(SEEDS, "default")
    inputs = MemberInputs(X, y, torch.zeros(len(SEEDS), 6), torch.ones(len(SEEDS), 6))
    return model, PopulationData(inputs, [r[0] for r in rows], [r[1] for r in rows], SEEDS), cfg


def test_workers_train_the_groups_one_after_another_would_and_report_every_groups_progress():
    """Two workers, groups of 3 and 2: every weight and curve equals the same groups trained in this process, and
    the progress callback hears epochs that never go back, ending with every group finished."""
    model, data, cfg = _population()
    heard = []
    side = fit_in_groups(model, data, cfg, "ce", 5, lambda epoch, active: heard.append((epoch, active)), workers=2)
    here = fit_in_groups(model, data, cfg, "ce", 3, workers=1)
    for name in ("best", "last", "best_stats", "last_stats"):
        assert torch.equal(getattr(side, name), getattr(here, name)), name
    assert np.array_equal(side.epochs_run, here.epochs_run) and np.array_equal(side.best_epoch, here.best_epoch)
    for name, curve in here.history.items():
        np.testing.assert_array_equal(side.history[name], curve, err_msg=name)
    epochs = [epoch for epoch, _ in heard]
    assert epochs == sorted(epochs) and heard[-1] == (cfg.trainer.epochs - 1, 0)
    assert max(active for _, active in heard) <= len(SEEDS)


def test_a_workers_error_reaches_the_run_as_itself(monkeypatch):
    model, data, cfg = _population()

    def broken(*args, **kwargs):
        raise ValueError("a forward that fails in group 2")

    monkeypatch.setattr(stacking, "fit", broken)  # the workers are forks: they run the patched loop
    with pytest.raises(ValueError, match="a forward that fails in group 2") as info:
        fit_in_groups(model, data, cfg, "ce", 5, workers=2)
    assert any("in the training worker of groups" in note for note in info.value.__notes__)

    def refused(*args, **kwargs):
        raise RunnerError("model.args names no such argument")

    monkeypatch.setattr(stacking, "fit", refused)
    with pytest.raises(RunnerError, match="^model.args names no such argument$"):
        fit_in_groups(model, data, cfg, "ce", 5, workers=2)


def test_a_killed_worker_ends_the_run_with_one_line_naming_the_fix(monkeypatch):
    model, data, cfg = _population()
    monkeypatch.setattr(stacking, "fit", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(RunnerError, match=r"ended without its result \(exit status -9.*trainer.workers=1"):
        fit_in_groups(model, data, cfg, "ce", 5, workers=2)


def test_a_resume_takes_the_groups_its_saved_states_name(tmp_path):
    """Saved states of groups 0-2 and 3-4 (two workers, say): a resume trains those groups, whatever the workers
    and group size now; parts that do not cover the population, or the whole population's own state, win."""
    path = tmp_path / "checkpoints" / "fit_state.pt"
    path.parent.mkdir()
    checkpoint = FitCheckpoint(path, resume=True)
    assert stacking._saved_groups(checkpoint, 5) is None  # nothing saved: chosen afresh
    for first, members in ((0, 3), (3, 2)):
        fit_state_part(path, first, members).write_bytes(b"")
    assert stacking._saved_groups(checkpoint, 5) == [[0, 1, 2], [3, 4]]
    assert stacking._saved_groups(checkpoint, 6) is None
    assert stacking._saved_groups(FitCheckpoint(path, resume=False), 5) is None
    path.write_bytes(b"")
    assert stacking._saved_groups(checkpoint, 5) == [[0, 1, 2, 3, 4]]


def test_sigterm_reaches_the_workers_which_save_and_the_resumed_run_equals_an_unbroken_one(tmp_path):
    """`kill` of the run: each worker saves its group's fit state at the end of its epoch, the run says where and
    exits 128 + SIGTERM, and `runner resume` finishes it with the results of a run never stopped."""
    run = tmp_path / "stopped"
    cli = [sys.executable, "-m", "runner.commands.cli"]
    args = ["eval=kfold", "eval.k=2", "trainer.epochs=400", "trainer.workers=2", "trainer.early_stopping.patience=null",
            "trainer.progress=false", "plots=false", "trainer.checkpoint_every=1"]
    job = subprocess.Popen([*cli, "train", *args, f"hydra.run.dir={run}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    parts = [run / "checkpoints" / "fit_m0+1_state.pt", run / "checkpoints" / "fit_m1+1_state.pt"]
    deadline = time.time() + 120
    while not all(p.exists() for p in parts) and job.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == [f"interrupted by SIGTERM; fit state saved in {run}",
                                        f"resume with: runner resume {run}"]
    assert all(torch.load(p, weights_only=True)["epoch"] < 399 for p in parts)
    done = subprocess.run([*cli, "resume", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not any(p.exists() for p in parts)  # a finished run keeps no fit state
    subprocess.run([*cli, "train", *args, f"hydra.run.dir={tmp_path / 'unbroken'}"], capture_output=True, check=True)
    resumed, unbroken = (json.loads((d / "results.json").read_text()) for d in (run, tmp_path / "unbroken"))
    resumed.pop("timing"), unbroken.pop("timing")
    assert resumed == unbroken and resumed["stacking"]["workers"] == 2


def test_what_a_workers_saved_state_sets_off_runs_in_the_run_that_holds_the_folder():
    """A fit's `saved` call (an overwrite=true run deletes the run it replaces) runs in the parent, which holds the
    run folder's claim, once per state a worker saves; the workers' results come back by group."""
    from types import SimpleNamespace

    from runner.engine.workers import side_by_side

    calls = []
    checkpoint = SimpleNamespace(saved=lambda: calls.append(os.getpid()))

    def train(group, report):
        checkpoint.saved()
        report(0, 1)
        return 10 * group

    assert side_by_side([[0, 2], [1]], train, lambda epoch, active: None, [1, 1, 1], 1, checkpoint) == \
        {0: 0, 1: 10, 2: 20}
    assert calls == [os.getpid()] * 3


@pytest.mark.parametrize("one_thread_step, kept", [(0.1, 1), (0.3, 2)])
def test_a_large_step_keeps_one_thread_where_that_was_no_slower(monkeypatch, one_thread_step, kept):
    """fewer_threads times one member's step on the threads it was given and on one, taking turns, and keeps one
    thread where that was no slower; both timings go on the record."""
    model, data, _ = _population()
    clock = {"now": 0.0}

    def perf_counter():  # each reading advances by the step time of the threads torch has now
        clock["now"] += 0.2 if torch.get_num_threads() > 1 else one_thread_step
        return clock["now"]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(stacking.time, "perf_counter", perf_counter)
        seconds = stacking.fewer_threads(model, stacking._probe_inputs(data, 16)[:1])
        assert torch.get_num_threads() == kept
        assert seconds == pytest.approx({"2 threads": 0.2, "1 thread": one_thread_step})
    finally:
        torch.set_num_threads(before)


def test_workers_train_small_steps_and_leave_a_large_one_to_threads(monkeypatch):
    """By default a small step's members go to one worker per core; a large step's stay in the run's process, even
    where a busy machine gave it one thread (each worker would hold a whole step's working memory); an explicit
    trainer.workers is kept, at most one per member."""
    from runner.engine import device

    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    cpu = torch.device("cpu")
    linux = sys.platform.startswith("linux")
    assert device.fit_workers(None, None, cpu, 5, small=True) == (2 if linux else 1)
    assert device.fit_workers(None, None, cpu, 5, small=False) == 1
    assert device.fit_workers(None, 1, cpu, 5, small=True) == 1  # trainer.threads set: one process
    assert device.fit_workers(None, None, cpu, 1, small=True) == 1
    if linux:
        assert device.fit_workers(3, None, cpu, 2, small=False) == 2
    assert device.small_step(device.SMALL_STEP_MACS - 1) and not device.small_step(device.SMALL_STEP_MACS)
