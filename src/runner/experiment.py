"""One experiment end to end: plan -> check -> fit the population -> finish (predictions, metrics, report)."""

from pathlib import Path

from runner.config.schema import Config
from runner.data.preprocess import preprocess
from runner.evaluate.plot_worker import PlotWorker
from runner.finish import check, draws_plots, finish
from runner.fit import fit_population
from runner.rundir import timing
from runner.study import plan


def train(cfg: Config, run_dir: str | Path, clock: timing.Stopwatch | None = None) -> dict:
    """Train the configured population, write the run directory and return results.json's dict."""
    clock = clock or timing.Stopwatch()  # `runner train` passes the one that started with the process
    run_dir = Path(run_dir)
    study = plan(cfg)
    check(study)
    clock.lap("data")
    pre = preprocess(study.dataset, study.members)
    clock.lap("preprocess")
    # Imports matplotlib on the other core while this process trains.
    plotter = PlotWorker.start() if draws_plots(cfg) else None
    fitted = fit_population(study, study.members, pre, study.over, run_dir=run_dir)
    clock.lap("train")
    return finish(study, fitted, run_dir, clock, plotter)


