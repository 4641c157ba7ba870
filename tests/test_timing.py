"""The lap timer behind results.json's timing: laps add up, the process clock starts at process start."""

import subprocess
import sys

import pytest

from runner.rundir import timing


def test_laps_book_the_time_since_the_previous_lap(monkeypatch):
    now = iter([10.0, 10.5, 12.0, 12.25, 13.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(now))
    clock = timing.Stopwatch(age_s=1.0)  # started at 9.0, one second before this object
    clock.lap("imports")  # 9.0 -> 10.5
    clock.lap("train")  # -> 12.0
    clock.lap("imports")  # -> 12.25: a second lap of a phase adds to it
    assert clock.timing() == {"imports_s": 1.75, "train_s": 1.5, "other_s": 0.75, "total_s": 4.0}


def test_process_age_counts_the_interpreter_start():
    code = "import time; time.sleep(0.3); from runner.rundir.timing import process_age_s; print(process_age_s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert age == pytest.approx(0.35, abs=0.3) and age >= 0.3  # clock ticks are 10 ms; start-up adds a little


def test_the_first_job_takes_the_process_clock_and_later_jobs_start_their_own():
    process = timing.start_process_clock(from_process_start=False)
    assert timing.job_clock() is process
    assert timing.job_clock() is not process
