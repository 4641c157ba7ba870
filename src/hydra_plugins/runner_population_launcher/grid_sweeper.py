"""`hydra/sweeper=runner_grid` (runner's app selects it in conf/runner_sweeper.yaml): Hydra's basic sweeper with
runner.sweeps.grid.ComposedOnce, found by Hydra here, since it takes plugins only from classes defined in
hydra_plugins; its config entry is stored here."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

from runner.sweeps import grid


class GridSweeper(grid.OwnFolders, grid.ComposedOnce, BasicSweeper):
    """Hydra's basic sweeper; every job's folder its own, and a batch bound for the population launcher composed once,
    by the launcher."""


ConfigStore.instance().store(group="hydra/sweeper", name="runner_grid", node=grid.GridSweeperConf, provider="runner")
