"""runner.train called twice in one process: each call's result and error are its own (one Outcome per command,
no state kept between calls), and the caller's sys.argv comes back."""

import sys

import pytest

import runner
from runner.commands.train import run

QUICK = ["model=logreg", "eval=holdout", "trainer.epochs=2", "trainer.progress=false", "plots=false",
         "eval.baselines=[]"]
BAD = "optim.lr=-1.0 is not valid: use a positive learning rate"


def test_a_failing_call_and_a_good_one_in_one_process_are_independent(tmp_path, monkeypatch, capsys):
    argv = sys.argv[:]
    with pytest.raises(runner.RunnerError) as bad:
        runner.train(*QUICK, "optim.lr=-1", run_dir=tmp_path / "bad")
    good = runner.train(*QUICK, run_dir=tmp_path / "good")
    assert str(bad.value) == BAD and not (tmp_path / "bad").exists()
    assert good.results["metrics"]["test/accuracy"]["mean"] is not None
    assert sys.argv == argv  # Hydra reads the command line there; the caller's is back
    # The command's own function, as `runner train` calls it: each call returns its own status and lines.
    assert run([*QUICK, "optim.lr=-1", f"hydra.run.dir={tmp_path / 'bad'}"]) == (2, [BAD])
    status, errors = run([*QUICK, f"hydra.run.dir={tmp_path / 'again'}"])
    assert (status, errors) == (0, [])
    again = runner.load(tmp_path / "again")
    assert again.results["metrics"] == good.results["metrics"]  # the same run, unchanged by the failures around it
    capsys.readouterr()


def test_a_call_leaves_the_callers_random_generators_as_they_were(tmp_path):
    """Python's, NumPy's and torch's global generators after runner.train are where the caller left them, in a
    fresh interpreter, where the libraries runner imports on first use are imported inside the call (rich draws
    its style ids from Python's generator as it is imported)."""
    import subprocess

    script = f"""
import random, numpy as np, torch
import runner
random.seed(0); np.random.seed(0); torch.manual_seed(0)
before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
runner.train(*{QUICK!r}, run_dir={str(tmp_path / "run")!r})
after = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
print(after[0] == before[0], (after[1] == before[1]).all(), torch.equal(after[2], before[2]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["True", "True", "True"]
