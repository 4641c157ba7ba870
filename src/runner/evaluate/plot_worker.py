"""A forked worker that imports matplotlib while the run trains, then draws the run's plots on the second core.

Importing matplotlib is a third of a small run's plotting time; a thread cannot hide it (the import holds the
GIL the training loop needs), a process started before training can. Where fork is missing, or the worker
fails, the plots are drawn in the run's own process as before.
"""

import os
import pickle
import sys

from runner.rundir.folder import write_atomic


class PlotWorker:
    """start() forks; send(jobs) hands over [(plot function name, path, args)] to draw as soon as it can;
    finish() waits until every file sent is written."""

    def __init__(self, pid: int, pipe):
        self.pid, self.pipe = pid, pipe

    @classmethod
    def start(cls) -> "PlotWorker | None":
        if not hasattr(os, "fork"):
            return None
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the run's code, never prints
            os.close(write)
            os._exit(_serve(read))
        os.close(read)
        return cls(pid, os.fdopen(write, "wb"))

    def send(self, jobs: list[tuple[str, object, tuple]]) -> None:
        """Have the worker write each plot (atomically), while this process goes on."""
        try:
            pickle.dump(jobs, self.pipe)
            self.pipe.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker has failed: finish() says so

    def finish(self) -> bool:
        """Wait for the worker; True when it wrote every plot it was sent."""
        try:
            self.pipe.close()
        except OSError:  # jobs still buffered for a worker that has failed: closed all the same
            pass
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        return os.waitstatus_to_exitcode(status) == 0

    def close(self) -> None:
        """Release the worker when no plots will be asked for (a run that failed): it reads the end of its
        pipe and exits."""
        if not self.pipe.closed:
            self.pipe.close()
        if self.pid is not None:
            os.waitpid(self.pid, 0)
            self.pid = None

    __del__ = close


def _serve(read: int) -> int:
    try:
        from runner.evaluate import plots

        plots.preload()

        with os.fdopen(read, "rb") as pipe:
            while True:
                try:
                    jobs = pickle.load(pipe)
                except EOFError:
                    return 0
                for name, path, args in jobs:
                    write_atomic(path, lambda file: getattr(plots, name)(*args, file))
    except BaseException:  # noqa: BLE001 (the run draws the plots itself then, and reports any error)
        return 1
