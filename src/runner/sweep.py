"""A Hydra callback that prints `runner report`'s comparison table when a sweep (-m) ends."""

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    """At the end of a multirun, print one table comparing its jobs (as `runner report SWEEP_DIR` would)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Compare the runs under the sweep dir; a problem is one line on stderr, never a failed sweep."""
        from runner.console import console
        from runner.errors import RunnerError
        from runner.evaluate.compare import compare_by_data, to_table

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            comparisons = compare_by_data([sweep_dir])
        except RunnerError as exc:
            print(f"sweep report: {exc}", file=sys.stderr)
            return
        for comparison in comparisons:  # a sweep over datasets: one table each
            console.print(to_table(comparison, console.width))
        console.print(f"sweep directory: [bold]{sweep_dir.resolve()}[/] (runner report {sweep_dir} to see it again)")
