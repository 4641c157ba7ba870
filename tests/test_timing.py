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


def test_reading_the_data_is_booked_to_data_and_a_groups_fit_to_train_of_its_first_job(tmp_path, monkeypatch):
    """What a lap books is the work done since the previous one: the first lap after the data is read (in the
    check before the run folder is written) is `data`, and after a sweep group's shared fit it is `train`."""
    import json

    from runner.commands.cli import main
    from runner.data import loading
    from runner.sweeps import population

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    done, booked = [], []

    def marking(name, work):
        def call(*args, **kwargs):
            out = work(*args, **kwargs)
            done.append(name)
            return out
        return call

    lap = timing.Stopwatch.lap

    def booking(self, phase):
        while done:
            booked.append((done.pop(), phase))
        lap(self, phase)

    monkeypatch.setattr(loading, "load_dataset", marking("read data", loading.load_dataset))
    monkeypatch.setattr(population, "fit_group", marking("fit group", population.fit_group))
    monkeypatch.setattr(timing.Stopwatch, "lap", booking)
    assert main(["train", "trainer.epochs=2", "trainer.progress=false", "plots=false",
                 f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    assert booked and set(booked) == {("read data", "data")}
    booked.clear()
    assert main(["train", "-m", "optim.lr=0.01,0.001", "trainer.epochs=2", "trainer.progress=false", "plots=false",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}"]) == 0
    assert ("fit group", "train") in booked and {phase for what, phase in booked if what == "fit group"} == {"train"}
    first, second = (json.loads((tmp_path / "sweep" / j / "results.json").read_text())["timing"] for j in "01")
    assert "train_s" in first and "train_s" not in second  # the shared fit is reported once, by the first job
