"""What one `runner train` command's jobs leave for it to report: one object per command, passed to its jobs and
reached by Hydra's callbacks (which Hydra makes from the config, with no arguments) through `current()`."""

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any

from runner.errors import Interrupted


@dataclass
class Outcome:
    """The lines a command prints as errors and what its jobs left: each job's user error or crash, a signal that
    stopped a run, and a sweep's jobs that did not finish, read from their folders."""

    errors: list[str] = field(default_factory=list)  # the command's own lines (a refused run, a bad override)
    job_errors: list[str] = field(default_factory=list)  # each job of this process: its user error or its crash
    crashes: list[str] = field(default_factory=list)  # the jobs among them that crashed (a bug)
    started: bool = False  # a job has started: an exception from here on is a bug in the run, not an override's
    # A single run stopped by a signal: handed to the command past Hydra, which would print its own "Error executing
    # job" line before runner's resume message; and what its folder's rollback said.
    interrupted: Interrupted | None = None
    rolled_back: str | None = None
    sweep_config: Any = None  # the multirun's config, for its summary when a signal stops it
    # A sweep's jobs that failed or never finished, read from their folders (so jobs that ran in other processes
    # count too): the command exits 2 when each was a user error, 1 when any is in `crashed`.
    failed: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    noticed: list[str] = field(default_factory=list)  # a sweep's jobs whose notices went to their train.log only

    def fail(self, message: str) -> int:
        """The command's own error line; its exit status (2, a user error)."""
        self.errors.append(message)
        return 2


_CURRENT: contextvars.ContextVar[Outcome] = contextvars.ContextVar("runner_train_outcome")


@contextlib.contextmanager
def recording(outcome: Outcome):
    """Make `outcome` the one `current()` gives while the command runs; the one before comes back after."""
    token = _CURRENT.set(outcome)
    try:
        yield outcome
    finally:
        _CURRENT.reset(token)


def current() -> Outcome:
    """The running command's Outcome; outside a command (a callback called on its own), a fresh one."""
    return _CURRENT.get(None) or Outcome()
