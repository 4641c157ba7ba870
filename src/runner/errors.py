"""The exceptions that reach the command line: user-fixable problems, and a training run stopped by a signal."""


class RunnerError(Exception):
    """A user-fixable problem; the CLI prints its one-line message and exits with status 2."""


class Interrupted(Exception):
    """Training stopped on a signal after saving its fit state; `status` is the exit status (130 or 143)."""

    def __init__(self, signum: int, path):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}; fit state saved in {path}")
        self.status = 128 + signum
        self.path = path
