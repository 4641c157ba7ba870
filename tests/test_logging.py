"""runner's messages through Python logging: train.log holds the run's story, hydra.verbose=runner its debug lines."""

import subprocess
import sys

import pytest

from runner.commands.cli import main

FAST = ["trainer.epochs=2", "trainer.progress=false", "plots=false"]


def test_train_log_holds_what_the_terminal_showed_once(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "trainer.seeds=2", f"hydra.run.dir={run}"]) == 0
    shown = capsys.readouterr().out
    log = (run / "train.log").read_text()
    assert f"[runner][INFO] - runner train {' '.join(FAST)} trainer.seeds=2 (run folder {run})" in log
    assert "heart: 303 rows, 28 features" in log and "heart: 303 rows, 28 features" in shown
    assert "test metrics, 95% CI" in log  # the headline table, as plain text
    assert f"run directory: {run}" in " ".join(log.split())  # a long path wraps
    assert log.rstrip().endswith(f"status ok: {run / 'results.json'}")
    assert "[runner]" not in shown  # the terminal shows each line once, as rich printed it
    assert "\x1b[" not in log  # no colour codes in the file
    assert not any(line != line.rstrip() for line in log.splitlines())  # no table padding


def test_a_refused_run_says_why_in_its_log(tmp_path):
    # Refused after the run folder exists (data errors are found in the job): the sweep's job keeps its log.
    out = subprocess.run([sys.executable, "-m", "runner.commands.cli", "train", "-m", *FAST, "dataset=csv",
                          f"dataset.path={tmp_path}/nope.csv", "dataset.target=y", f"hydra.sweep.dir={tmp_path}/s"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    log = (tmp_path / "s" / "0" / "train.log").read_text()
    assert "status failed:" in log and "nope.csv" in log


@pytest.mark.slow  # draws the plots (matplotlib's import and fonts): about 5 s
def test_verbose_true_shows_runners_debug_lines_and_no_font_chatter(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "runner.commands.cli", "train", "trainer.epochs=2", "trainer.progress=false", "plots=true",
                          f"hydra.run.dir={run}", "hydra.verbose=true"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    log = (run / "train.log").read_text()
    assert "[runner][DEBUG] - the resolved config:" in log and "[runner][DEBUG] - seconds per phase:" in log
    assert "[runner][DEBUG] - the resolved config:" in out.stdout  # debug lines reach the terminal too
    assert "matplotlib" not in log and "matplotlib" not in out.stdout
    assert (run / "curves.png").stat().st_size > 0  # the plots were drawn in this run


def test_verbose_runner_turns_on_runners_debug_lines_only(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "runner.commands.cli", "train", *FAST, f"hydra.run.dir={run}",
                          "hydra.verbose=runner"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[runner][DEBUG] - the resolved config:" in out.stdout
    assert "[HYDRA]" not in out.stdout  # hydra.verbose=true would add Hydra's own debug report
