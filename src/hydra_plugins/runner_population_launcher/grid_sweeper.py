"""`hydra/sweeper=runner_grid` (runner's app selects it in conf/config.yaml): runner.sweeps.grid.GridSweeper, found
by Hydra here, since it takes plugins only from classes defined in hydra_plugins; its config entry is stored here."""

from hydra.core.config_store import ConfigStore

from runner.sweeps import grid


class GridSweeper(grid.GridSweeper):
    pass


ConfigStore.instance().store(group="hydra/sweeper", name="runner_grid", node=grid.GridSweeperConf, provider="runner")
