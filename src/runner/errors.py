"""The exceptions that reach the command line: user-fixable problems, and a run stopped by a signal."""

import signal as _signal
from contextlib import contextmanager as _contextmanager

# The signals that stop a run: Ctrl-C, `kill`, and SIGUSR2 (a batch system's warning before its time limit).
STOP_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGUSR2)


@_contextmanager
def stop_signals_to(handler):
    """While inside: every stop signal goes to `handler(signum, frame)`; the handlers before (given: signal ->
    handler) come back after. Outside the main thread (where no handler runs anyway) nothing changes."""
    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = _signal.signal(signum, handler)
        except ValueError:
            break
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            _signal.signal(signum, old)


class RunnerError(Exception):
    """A user-fixable problem; the CLI prints its one-line message and exits with status 2."""


class Interrupted(Exception):
    """A run stopped by a signal; `status` is the exit status (128 + the signal), `run_dir` the folder it stopped
    in, `saved` whether its fit state was saved at the end of an epoch (resume continues from there).
    Picklable, so a launcher running jobs in other processes (submitit, joblib) can hand it back."""

    def __init__(self, signum: int, run_dir=None, saved: bool = False):
        if isinstance(signum, str):  # OmegaConf re-raises an error inside a config as type(error)(its message)
            import re
            import signal

            named = re.search(r"interrupted by (SIG[A-Z0-9]+)", signum)
            signum = signal.Signals[named.group(1)] if named else signal.SIGTERM
        super().__init__(signum, run_dir, saved)
        self.signum, self.status, self.run_dir, self.saved = signum, 128 + signum, run_dir, saved

    def __str__(self) -> str:
        import signal

        where = f"; fit state saved in {self.run_dir}" if self.saved else f" in {self.run_dir}" if self.run_dir else ""
        return f"interrupted by {signal.Signals(self.signum).name}{where}"

    def __reduce__(self):
        return type(self), (self.signum, self.run_dir, self.saved)

    @classmethod
    def of(cls, stop: BaseException) -> "Interrupted":
        """The Interrupted behind `stop`: itself, the one a Stopped carries, or Ctrl-C's (a KeyboardInterrupt)."""
        import signal

        return stop if isinstance(stop, Interrupted) else getattr(stop, "interrupted", None) or cls(signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """A stop signal's Interrupted, raised where library code catches Exception (Hydra turns an Exception from a
    callback into a warning, and one from its job runner into a failed job): like Ctrl-C, it passes them all."""

    def __init__(self, interrupted: Interrupted):
        super().__init__(interrupted)
        self.interrupted = interrupted

    def __str__(self) -> str:
        return str(self.interrupted)
