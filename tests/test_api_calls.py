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
