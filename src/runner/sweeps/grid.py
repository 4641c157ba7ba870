"""`hydra/sweeper=runner_grid`, runner's default for -m (conf/config.yaml): Hydra's basic sweeper (every combination
of the overrides), less its trial composition of every job when the population launcher composes them itself.

Its own name, so `hydra/sweeper=basic` stays Hydra's for every app (and for runner's, where it only starts slower); a
preset that overrides the sweeper (hparams_search=heart_optuna) still can. With any other launcher it is Hydra's
basic sweeper unchanged.

Hydra's sweeper composes each job once to fail early, then the launcher composes it again to run it: with
the population launcher, which composes (and checks) every job of a batch before training any, the first
composition only doubles the sweep's start-up (measured: a quarter of a 12-job heart sweep's wall time).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from runner import rundir
from runner.sweeps.launcher import PopulationLauncher, job_folder


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.runner_population_launcher.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


class OwnFolders:
    """Mixed into a sweeper: every job's folder is checked to be its own (rundir.check_job_folders) before the
    sweep writes anything, multirun.yaml included. Only a hydra.sweep.subdir other than the job number can fail
    it, and only then is each job composed once more to find its folder."""

    def sweep(self, arguments: List[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        subdir = str(self.config.hydra.sweep._get_node("subdir")._value())
        if subdir != "${hydra.job.num}":
            loader = self.hydra_context.config_loader
            parsed = OverridesParser.create(config_loader=loader).parse_overrides([*self._parse_config(), *arguments])
            jobs = [job for batch in self.split_arguments(parsed, None) for job in batch]
            folders = {num: job_folder(loader.load_sweep_config(self.config, list(job)), num)
                       for num, job in enumerate(jobs)}
            rundir.check_job_folders(Path(str(self.config.hydra.sweep.dir)), folders, subdir)
        return super().sweep(arguments)


class ComposedOnce:
    """Mixed into Hydra's basic sweeper (hydra_plugins.runner_population_launcher.grid_sweeper.GridSweeper, made
    there from the BasicSweeper class of each plugin scan: Hydra's scanner runs its module again, and a class made
    from an older scan's BasicSweeper fails its own `super(BasicSweeper, self)`): a batch bound for the population
    launcher running runner's app is composed once, by the launcher."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not (isinstance(self.launcher, PopulationLauncher) and self.launcher.runner_app):
            super().validate_batch_is_legal(batch)
