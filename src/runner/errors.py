"""The exceptions that reach the command line: user-fixable problems, and a run stopped by a signal."""


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
