"""What a run shows on the terminal: one rich console and the epoch progress bar."""

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()


@contextmanager
def epoch_progress(epochs: int, members: int, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over epochs on a terminal or in a notebook (quiet otherwise); yields the per-epoch callback."""
    if not (enabled and (console.is_terminal or console.is_jupyter)):
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
