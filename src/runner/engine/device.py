"""Choosing the torch device a run trains on."""

import os
import sys
import time

import torch

from runner.errors import RunnerError


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise RunnerError(f"trainer.device={name} is not available on this machine; use trainer.device=auto or cpu")
    return torch.device(name)


# Below this many multiply-adds per step, intra-op threads cost more in hand-offs than they save
# (and on a loaded machine they spin-wait: measured 50x slower on 2 busy cores for heart k-fold).
SMALL_STEP_MACS = 20_000_000


def small_step(macs_per_step: int) -> bool:
    """Whether a training step is small enough that one CPU thread trains it fastest (SMALL_STEP_MACS)."""
    return macs_per_step < SMALL_STEP_MACS


def configure_threads(threads: int | None, device: torch.device, macs_per_step: int) -> None:
    """Set torch's CPU thread count: the configured number, 1 for small steps, else one per core that is free now."""
    if device.type != "cpu":
        return
    if threads is None:
        threads = 1 if small_step(macs_per_step) else max(1, min(usable_cores(), free_cores()))
    torch.set_num_threads(threads)


def fit_workers(workers: int | None, threads: int | None, device: torch.device, members: int, small: bool) -> int:
    """How many worker processes, one thread each, train the population's groups side by side
    (engine/workers.py): trainer.workers, or by default on Linux's CPU for a `small` step (trainer.threads unset)
    one per core this process may use, at most one per member, outside a batch system's task (_batch_task); else 1.
    Not for a large step, which takes a thread per free core instead (one on a busy machine): each worker holds
    its own step's working memory and its allocator's slack (a ResNet-18 layout's 5 folds in two workers: 1.40-1.52
    GB of PSS in all, 0.82-0.95 GB for the plain loop, against the 0.18 GB a member's activations count). Not one
    per core free now: the groups the members train in depend on it (and a vmapped member's float rounding on its
    group), so a run on a busy machine gives the numbers it gives on an idle one; a busy core's share goes to the
    workers as to any process."""
    from runner.engine.workers import forks

    if workers is not None:
        if workers > 1 and (device.type != "cpu" or not forks()):
            where = device.type if device.type != "cpu" else "this system (no fork)"
            raise RunnerError(f"trainer.workers={workers} trains groups side by side in processes on the CPU, not on "
                              f"{where}: use trainer.workers=1 (or null)")
        return max(1, min(workers, members))
    if (device.type != "cpu" or threads is not None or not small or members < 2 or not forks()
            or not sys.platform.startswith("linux")  # macOS: a fork of a process that has run torch is unsafe
            or _batch_task()):
        return 1
    return max(1, min(members, usable_cores()))


def _batch_task() -> bool:
    """Whether this process is a batch system's task (SLURM, or a submitit launcher's job): it trains in this one
    process, where the batch system's signals (a requeue before the time limit, scancel) reach the fit."""
    return "SLURM_JOB_ID" in os.environ or "SUBMITIT_EXECUTOR" in os.environ


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def free_cores(sample_s: float = 0.1) -> int:
    """Cores not busy with other work, from /proc/stat over `sample_s` (this process is idle meanwhile).

    A thread on a busy core does not just share it: torch's workers wait on each other at every op, so one
    preempted worker stalls the rest (issue #22: digits k-fold CNN on a loaded machine, 140 s train_s with
    2 spin-waiting threads, 20 s with 1).
    """
    before = _cpu_ticks()
    if before is None:
        return usable_cores()
    time.sleep(sample_s)
    after = _cpu_ticks()
    busy, total = (a - b for a, b in zip(after, before))
    cores = os.cpu_count() or 1
    busy_cores = cores * busy / total if total > 0 else 0.0
    return max(1, cores - round(busy_cores))


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot; None where /proc/stat is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total
