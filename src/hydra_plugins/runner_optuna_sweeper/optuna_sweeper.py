"""Where Hydra discovers `hydra/sweeper=optuna`: it takes plugins only from classes defined in hydra_plugins, so this
names runner.sweeps.optuna.OptunaSweeper here and adds nothing."""

from runner.sweeps import optuna


class OptunaSweeper(optuna.OptunaSweeper):
    pass
