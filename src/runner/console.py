"""What a run shows on the terminal: one rich console (its lines also logged) and the epoch progress bar."""

import io
import logging
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger("runner")


def short_override(override: str) -> str:
    """An override as a line shows it: a fraction written with more than 3 significant digits (an Optuna trial's
    `optim.lr=0.004430375245218269`) to 3 of them (`optim.lr=0.00443`); anything else as written."""
    key, sep, value = override.partition("=")
    lowered = value.lower()
    if sep and re.fullmatch(r"-?\d*\.\d+(e[-+]?\d+)?", lowered) and len(re.sub(r"e.*|\D", "", lowered).lstrip("0")) > 3:
        return f"{key}={float(value):.3g}"
    return override


class LoggedConsole(Console):
    """A rich console that, inside a job (`job()`), also sends what it prints to Python logging (logger `runner`,
    INFO) as plain text, so the run's train.log (Hydra's file handler) holds what its terminal showed."""

    logged = False  # inside a job: printed lines also go to logging
    quiet = False  # inside a sweep's job: printed lines go to logging only (the sweep prints one line per job)
    notices = 0  # warnings and notices kept off the terminal by `quiet`

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.quiet:
            super().print(*objects, **kwargs)
        if not (self.logged and objects and log.isEnabledFor(logging.INFO)):
            return
        text = self.plain(*objects, **kwargs)
        self.notices += self.quiet and text.startswith(("warning", "notice", "note"))
        log.info(text, extra=OFF_TERMINAL)

    @contextmanager
    def job(self, quiet: bool, logged: bool = True) -> Iterator[None]:
        """While a job runs: what is printed is logged too (unless not `logged`); with `quiet`, logged only."""
        before = self.logged, self.quiet
        self.logged, self.quiet, self.notices = logged, quiet, 0
        try:
            yield
        finally:
            self.logged, self.quiet = before

    def plain(self, *objects: Any, **kwargs: Any) -> str:
        """`objects` as this console would print them, at its width, without colour, markup or padding."""
        text = io.StringIO()
        Console(file=text, width=self.width, color_system=None, force_terminal=False, force_jupyter=False,
                highlight=False).print(*objects, **kwargs)
        return "\n".join(line.rstrip() for line in text.getvalue().rstrip("\n").splitlines())


# A record's `extra` for the log file only: a line the terminal already showed, or a note it needs not show.
OFF_TERMINAL = {"terminal": False}


def note(message: str, *args: Any) -> None:
    """A line of the run's story for train.log only (the terminal shows its own summary of it)."""
    log.info(message, *args, extra=OFF_TERMINAL)


class NotShown(logging.Filter):
    """For a terminal's log handler: drops the records marked OFF_TERMINAL (runner printed them itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "terminal", True)


class LogFile(logging.FileHandler):
    """train.log's handler: a line it cannot write (a full disk) is dropped without the traceback that logging
    prints for it; the run's status.json and its one error line say what failed."""

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)


class NoJobListing(NotShown):
    """For Hydra's own terminal handler in a sweep: also drops the launchers' `#3 : optim=sgd` line per job,
    which runner's line for the job repeats, with its result, when the job is done."""

    def filter(self, record: logging.LogRecord) -> bool:
        return super().filter(record) and not _JOB_LISTING.match(str(record.msg))


_JOB_LISTING = re.compile(r"\s*#\d+ : ")


console = LoggedConsole()


@contextmanager
def epoch_progress(epochs: int, members: int, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over epochs on a terminal or in a notebook (quiet otherwise); yields the per-epoch callback.
    A notebook draws it with ipywidgets; without them rich would only warn in the cell, so there is no bar."""
    import importlib.util

    notebook = console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None
    if not (enabled and (console.is_terminal or notebook)):
        yield lambda epoch, active: None
        return
    columns = [TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs ·"),
               TextColumn("{task.fields[active]} of %d members active ·" % members), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("train", total=epochs, active=members)
        yield lambda epoch, active: progress.update(task, completed=epoch + 1, active=active)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A transient spinner with `message` while a slow step runs, on a terminal only (pipes and logs stay clean)."""
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield
