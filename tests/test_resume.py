"""A fit that is interrupted and resumed ends exactly as an unbroken one; diverged members stop alone."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import assert_same_fit, fit_population
from runner.config.schema import AugConfig, AvgConfig, AvgName, Config, EarlyStoppingConfig, ModelConfig, OptimConfig, SchedConfig, SchedName, TrainerConfig
from runner.engine.inputs import MemberInputs
from runner.engine.resume import FitCheckpoint
from runner.errors import Interrupted

SEEDS = [2, 8, 5]


def _data(E, n=80, d=5):
    g = np.random.default_rng(1)
    X = torch.from_numpy(g.normal(size=(n, d)).astype(np.float32))
    y = torch.from_numpy((X[:, 0].numpy() + g.normal(size=n) > 0).astype(np.float32))
    train = [np.sort(g.choice(n, size=50 - 3 * e, replace=False)) for e in range(E)]
    val = [np.setdiff1d(np.arange(n), t)[:20] for t in train]
    return X, y, train, val


def _fit(checkpoint=None, on_epoch=None, inputs=None, seeds=SEEDS, data=None):
    X, y, train, val = data or _data(len(seeds))
    cfg = Config(optim=OptimConfig(lr=0.05), model=ModelConfig(hidden=[8], dropout=0.2),
                 sched=SchedConfig(name=SchedName.plateau, patience=2, factor=0.5, warmup_steps=4),
                 aug=AugConfig(noise=0.1, mixup=0.2), avg=AvgConfig(name=AvgName.compare, start_epoch=3),
                 trainer=TrainerConfig(epochs=25, batch_size=16, early_stopping=EarlyStoppingConfig(patience=4)))
    return fit_population(cfg, X, y, list(zip(train, val)), seeds, inputs=inputs, on_epoch=on_epoch,
                          checkpoint=checkpoint)


def test_interrupted_after_members_left_then_resumed_equals_unbroken_bit_for_bit(tmp_path):
    """Stopped after a member has left the population (every model and path stopped early: test_contract.py)."""
    stop_at = 9
    unbroken = _fit()
    assert len(set(unbroken.epochs_run)) > 1 and unbroken.epochs_run.min() <= stop_at  # one left before the stop
    checkpoint = FitCheckpoint(tmp_path / "fit_state.pt", every=3)

    def ask_to_stop(epoch, active):
        if epoch == stop_at:
            checkpoint.signal = signal.SIGTERM  # what the handler does on SIGTERM

    with pytest.raises(Interrupted) as info:
        _fit(checkpoint, ask_to_stop)
    assert info.value.status == 143
    assert torch.load(checkpoint.path, weights_only=True)["epoch"] == stop_at
    resumed = _fit(FitCheckpoint(tmp_path / "fit_state.pt", resume=True))
    assert_same_fit(resumed, unbroken)


def test_a_fit_state_from_another_setup_is_refused(tmp_path):
    from runner.errors import RunnerError

    checkpoint = FitCheckpoint(tmp_path / "fit_state.pt", every=1)
    checkpoint.signal = signal.SIGINT
    with pytest.raises(Interrupted):
        _fit(checkpoint)
    with pytest.raises(RunnerError, match="members=3, this run has 2"):
        _fit(FitCheckpoint(tmp_path / "fit_state.pt", resume=True), seeds=SEEDS[:2])


def test_a_diverging_member_stops_and_leaves_the_others_unchanged():
    X, y, train, val = _data(3)
    scale = torch.ones(3, X.shape[1])
    scale[1] = 0.0  # member 1's preprocessing divides by 0: its inputs, hence its loss, are not finite
    inputs = MemberInputs(X, y, torch.zeros(3, X.shape[1]), scale)
    stacked = _fit(inputs=inputs)
    assert stacked.diverged_epoch.tolist() == [-1, 0, -1]
    assert stacked.epochs_run[1] == 1
    without = _fit(seeds=[SEEDS[0], SEEDS[2]], data=(X, y, [train[0], train[2]], [val[0], val[2]]))
    for e, alone in ((0, 0), (2, 1)):
        torch.testing.assert_close(stacked.last[e], without.last[alone], atol=1e-6, rtol=0)
        assert stacked.epochs_run[e] == without.epochs_run[alone]


def test_all_members_diverged_is_a_one_line_error_not_a_result(tmp_path):
    out = subprocess.run([sys.executable, "-m", "runner.commands.cli", "train", "optim=sgd", "optim.lr=1e6",
                          "trainer.epochs=5", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: every member diverged (training loss not finite or exploding, first at epoch 0); lower optim.lr "
        "or clip gradients (trainer.grad_clip.norm=1.0)"]
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow  # 25 s: two full runs and a killed one; the SIGTERM test covers the same path in the default suite
def test_sigkill_mid_run_then_runner_resume_gives_the_same_results(tmp_path):
    args = ["trainer.epochs=400", "trainer.early_stopping.patience=null", "trainer.checkpoint_every=2",
            "trainer.progress=false", "trainer.seeds=2"]
    cli = [sys.executable, "-m", "runner.commands.cli"]
    run = tmp_path / "killed"
    job = subprocess.Popen([*cli, "train", *args, f"hydra.run.dir={run}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    states = lambda: sorted((run / "checkpoints").glob("fit*_state.pt"))  # noqa: E731 (one a worker, on 2+ cores)
    deadline = time.time() + 120
    while not states() and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    job.kill()  # its workers die with it
    job.wait()
    assert states() and not (run / "results.json").exists()
    assert subprocess.run([*cli, "resume", str(run)], capture_output=True).returncode == 0
    subprocess.run([*cli, "train", *args, f"hydra.run.dir={tmp_path / 'unbroken'}"], capture_output=True, check=True)
    resumed, unbroken = (json.loads((d / "results.json").read_text()) for d in (run, tmp_path / "unbroken"))
    resumed.pop("timing"), unbroken.pop("timing")
    assert resumed == unbroken
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (run, tmp_path / "unbroken"))
    assert torch.equal(a["flat"], b["flat"])
    assert not states()  # a finished fit leaves no state behind


def test_sigterm_mid_run_prints_runner_resume_message_alone(tmp_path):
    run = tmp_path / "stopped"
    job = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "train", "trainer.epochs=100000",
                            "trainer.early_stopping.patience=null", "trainer.progress=false",
                            "trainer.checkpoint_every=1", f"hydra.run.dir={run}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    state = run / "checkpoints" / "fit_state.pt"  # written after the first epoch: training is under way
    while not state.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == [  # no Hydra "Error executing job with overrides" line before it
        f"interrupted by SIGTERM; fit state saved in {run}",
        f"resume with: runner resume {run}"]
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2])
def test_a_signal_while_a_config_is_composed_stays_that_signal(signum):
    """OmegaConf re-raises an error met while it builds a config as type(error)(its message) (format_and_raise):
    a signal arriving while a sweep composes its jobs is still that signal's Interrupted (it was a TypeError)."""
    from omegaconf._utils import format_and_raise

    cause = Interrupted(signum)
    with pytest.raises(Interrupted) as info:
        format_and_raise(node=None, key="a", value=None, msg=str(cause), cause=cause)
    assert info.value.signum == signum and info.value.status == 128 + signum
