"""`hydra/sweeper=runner_optuna`: runner.sweeps.optuna.OptunaSweeper, found by Hydra here, since it takes plugins only
from classes defined in hydra_plugins; its config entry is stored here."""

from hydra.core.config_store import ConfigStore

from runner.sweeps import optuna


class OptunaSweeper(optuna.OptunaSweeper):
    pass


ConfigStore.instance().store(group="hydra/sweeper", name="runner_optuna", node=optuna.OptunaSweeperConf,
                             provider="runner")
