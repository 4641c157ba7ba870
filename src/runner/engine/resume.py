"""Fit-state checkpoints: written atomically every few epochs and on Ctrl-C / SIGTERM, read back to resume."""

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from runner.errors import Interrupted, RunnerError, stop_signals_to
from runner.rundir.folder import write_atomic

DEFAULT_SECONDS = 60.0  # without trainer.checkpoint_every: about once a minute of training


@dataclass
class FitCheckpoint:
    """Where a fit keeps its state, how often, and whether to start from the state found there."""

    path: Path
    every: Optional[int] = None  # epochs; None: about once a minute
    resume: bool = False
    signal: Optional[int] = None  # set by the handler: save at the end of this epoch and stop
    saved: Optional[Callable[[], None]] = None  # called once a state is on disk (the run can resume from it)
    _saved_at: float = field(default_factory=time.perf_counter)

    def due(self, epoch: int) -> bool:
        if self.signal is not None:
            return True
        if self.every is not None:
            return (epoch + 1) % self.every == 0
        return time.perf_counter() - self._saved_at >= DEFAULT_SECONDS

    def save(self, state: dict) -> None:
        """Write atomically (a crash or a kill mid-write leaves the previous state), then stop on a signal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, lambda file: torch.save(state, file))
        self._saved_at = time.perf_counter()
        if self.saved is not None:
            self.saved()
        if self.signal is not None:
            raise Interrupted(self.signal, self.path.parent.parent, saved=True)

    def load(self, expected: dict) -> Optional[dict]:
        """The saved state (None: nothing saved yet, start afresh); refused if it belongs to another setup."""
        if not self.resume or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True, map_location="cpu")
        except Exception as exc:  # a truncated or foreign file
            raise RunnerError(f"cannot read the fit state {self.path} ({type(exc).__name__}); delete it to start "
                              "afresh") from None
        for key, value in expected.items():
            if state.get("setup", {}).get(key) != value:
                raise RunnerError(f"the fit state {self.path} was saved with {key}={state.get('setup', {}).get(key)}, "
                                  f"this run has {value}: resume with the run's own overrides (runner resume DIR)")
        return state

    def done(self) -> None:
        """The fit finished: its state is no longer needed."""
        self.path.unlink(missing_ok=True)




@contextmanager
def stop_on_signals(checkpoint: Optional[FitCheckpoint]):
    """While training: a stop signal asks the loop to save its state and stop at the epoch's end (a second
    one stops at once; one that came after the last save still stops the run once the fit has ended)."""
    if checkpoint is None:
        yield
        return

    def handler(signum, frame):
        if checkpoint.signal is not None:
            raise Interrupted(signum, checkpoint.path.parent.parent)
        checkpoint.signal = signum

    with stop_signals_to(handler):
        yield
    if checkpoint.signal is not None:  # the fit ended (its last epoch, or every member stopped) before saving
        raise Interrupted(checkpoint.signal, checkpoint.path.parent.parent)
