"""Where a run's seconds go, from process start to exit: a lap timer behind results.json's `timing`."""

import os
import time

# The phases results.json reports, in the order a run passes through them.
PHASES = ("startup", "imports", "config", "data", "preprocess", "train", "predict", "scoring", "baselines",
          "ensembles", "files", "tensorboard", "plots", "reports")


def process_age_s() -> float:
    """Seconds since this process started (the interpreter's own start-up included); 0 if unknown."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (after the parenthesised command name) is the start time in clock ticks since boot.
            started = int(f.read().rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
        clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
        age = time.clock_gettime(clock) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return age if 0 <= age < 60 else 0.0  # a clock mismatch must not invent minutes


class Stopwatch:
    """Seconds per phase: each `lap(phase)` books the time since the previous lap to `phase`."""

    def __init__(self, age_s: float = 0.0):
        self.start = time.perf_counter() - age_s
        self.last = self.start
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        """Book the seconds since the last lap (or the start) to `phase`."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def timing(self) -> dict[str, float]:
        """results.json's `timing`: `<phase>_s` per phase, `other_s` for time no lap claimed, `total_s`."""
        total = time.perf_counter() - self.start
        out = {f"{k}_s": round(self.seconds[k], 3) for k in PHASES if k in self.seconds}
        out.update({f"{k}_s": round(v, 3) for k, v in self.seconds.items() if k not in PHASES})
        out["other_s"] = round(max(total - sum(self.seconds.values()), 0.0), 3)
        out["total_s"] = round(total, 3)
        return out


_first: list[Stopwatch] = []  # the `runner` command's stopwatch, until its first job takes it


def start_process_clock(from_process_start: bool = True) -> Stopwatch:
    """The command's stopwatch, counting from process start (interpreter start-up booked); its first job takes it."""
    clock = Stopwatch(process_age_s() if from_process_start else 0.0)
    clock.lap("startup")
    _first[:] = [clock]
    return clock


def job_clock() -> Stopwatch:
    """The stopwatch of a job starting now: the command's own for its first job (so imports count), else a new one."""
    return _first.pop() if _first else Stopwatch()


def waiting() -> Stopwatch | None:
    """The command's stopwatch while no job has taken it (None when there is none)."""
    return _first[0] if _first else None


def hand_on(clock: Stopwatch) -> None:
    """Leave `clock` for the next job_clock(): a launcher's seconds before a job (its imports, a group's fit) are
    that job's."""
    _first[:] = [clock]
