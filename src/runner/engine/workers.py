"""Groups of members trained side by side, each share of the groups in a worker process of its own.

A small module's step is too short for several threads to share (runner gives it one: more only wait on each
other), so where the machine has several cores, the population's groups train at once, one worker per core, each
on one thread. A worker is a fork of this process: it reads the population and its data from the pages it
shares with this one (copy-on-write, so the data stays in memory once), trains its groups one after another
exactly as this process would (stacked equals alone: the same weights either way), and sends each group's result
back. Processes, not threads: the step's Python holds the GIL, and two threads trained an rtdl ResNet's two
halves 1.6x slower than one after the other. What a saved fit state sets off (the run it replaces deleted) and
the progress bar stay with this process, which holds the run folder.

Stop signals: a worker runs in a process group of its own, so Ctrl-C at a terminal reaches this process alone,
which passes each stop signal on to every worker once. A worker then saves its fit state at the end of the epoch
and stops, as the fit in this process would; a second signal stops them at once. A worker dies with this process.
"""

import contextlib
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection, wait
from typing import Callable

import torch

from runner.errors import Interrupted, RunnerError, stop_signals_to

# train(group, report) -> that group's result; report(epoch, active) after each epoch
Train = Callable[[int, Callable[[int, int], None]], object]


def forks() -> bool:
    """Whether workers can start here: a fork of this process (Linux, macOS)."""
    return hasattr(os, "fork")


class _Worker:
    """A forked worker: its pid, the pipe it writes to, and how it ended."""

    def __init__(self, share: list[int], train: Train, checkpoint):
        read, write = os.pipe()
        sys.stdout.flush()  # what this process has buffered is its own to write, not the worker's too
        sys.stderr.flush()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the worker: never returns into the run's code, never flushes the run's streams
            os.close(read)
            try:
                _die_with(parent)
                _work(Connection(write, readable=False), share, train, checkpoint)
            finally:
                os._exit(0)
        os.close(write)
        self.pipe, self.status = Connection(read, writable=False), None

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is None

    def ended(self) -> int:
        """Waits for it; its exit status, or minus the signal that ended it."""
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.ended()


def side_by_side(shares: list[list[int]], train: Train, report: Callable[[int, int], None],
                 sizes: list[int], epochs: int, checkpoint=None) -> dict[int, object]:
    """Each worker w trains groups shares[w] in turn with `train`; their results by group. `report(epoch,
    active)` hears the groups' progress: the epochs the groups have finished on average (a finished group has
    finished all `epochs`), and the members still training in all of them (`sizes` are the groups' members).
    `checkpoint.saved`, the fit's call once a state is on disk, runs here when a worker has saved one."""
    workers = []
    try:
        for share in shares:
            workers.append(_Worker(share, train, checkpoint))
        with _passed_on(workers):
            return _collect(shares, workers, report, sizes, epochs, getattr(checkpoint, "saved", None))
    finally:
        for worker in workers:
            worker.kill()
            worker.pipe.close()


def _work(pipe: Connection, share: list[int], train: Train, checkpoint) -> None:
    """In the worker: its groups in turn, each result (or what stopped it) sent back as it comes."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent alone, which passes it on once
    # One thread: the worker's share of the cores. (An OpenMP pool the parent started does not survive a fork, and
    # a parallel region in the worker would wait on it forever; with one thread torch runs every op inline.)
    torch.set_num_threads(1)

    def send(*message) -> None:
        pipe.send_bytes(pickle.dumps(message))

    if getattr(checkpoint, "saved", None) is not None:  # the parent holds the run folder: it acts on a save
        checkpoint.saved = lambda: send("saved")
    try:
        for group in share:
            send("done", group, train(group, lambda epoch, active, group=group: send("epoch", group, epoch, active)))
    except Interrupted as exc:
        send("stopped", exc)
    except BaseException as exc:  # noqa: BLE001: whatever ended the worker goes back to the parent
        text = traceback.format_exc()
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001: an exception that cannot travel travels as its text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        send("error", exc, text)
    finally:
        pipe.close()


def _collect(shares, workers, report, sizes, epochs, saved) -> dict[int, object]:
    """The workers' messages until every worker has ended: results, progress, a stop or an error."""
    results, stopped = {}, []
    done = dict.fromkeys(range(len(sizes)), 0)  # epochs finished, by group
    active = dict(enumerate(sizes))
    open_pipes = {worker.pipe: w for w, worker in enumerate(workers)}
    while open_pipes:
        for pipe in wait(list(open_pipes)):
            try:
                message = pickle.loads(pipe.recv_bytes())
            except EOFError:
                w = open_pipes.pop(pipe)
                lost = [g for g in shares[w] if g not in results]
                if lost and not stopped:
                    raise RunnerError(
                        f"a training worker (groups {', '.join(map(str, lost))}) ended without its result (exit status "
                        f"{workers[w].ended()}: killed, or out of memory?); trainer.workers=1 trains the groups one "
                        "after another in this process")
                continue
            kind = message[0]
            if kind == "epoch":
                _, group, epoch, now = message
                done[group], active[group] = epoch + 1, now
            elif kind == "done":
                _, group, result = message
                results[group], active[group], done[group] = result, 0, epochs
            elif kind == "saved":
                saved()
            elif kind == "stopped":
                stopped.append(message[1])
            else:
                _, exc, text = message
                if not isinstance(exc, RunnerError):
                    exc.add_note(f"in the training worker of groups {shares[open_pipes[pipe]]}:\n{text}")
                raise exc
            if kind in ("epoch", "done"):
                report(sum(done.values()) // len(done) - 1, sum(active.values()))
    if stopped:  # every worker has saved (or, after a second signal, not): the run stops as a fit here would
        raise min(stopped, key=lambda exc: exc.saved)
    return results


@contextlib.contextmanager
def _passed_on(workers):
    """While inside: each stop signal this process gets goes to every worker still running, then to the handler
    that was there (the fit's: the first signal marks the stop, a second raises)."""
    def handler(signum, frame):
        before = previous.get(signum)
        if before == signal.SIG_IGN:
            return
        for worker in workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)
        if callable(before):
            before(signum, frame)
        else:  # the default action: this process ends as it would have (and its workers with it)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    previous = {}
    with stop_signals_to(handler) as replaced:
        previous.update(replaced)
        yield


def _die_with(parent: int) -> None:
    """Linux: this worker gets SIGKILL when the process that started it ends, however it ends (and ends now if
    that process ended before it could ask)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
