"""Where Hydra discovers `hydra/launcher=population`: it takes plugins only from classes defined in hydra_plugins, so this
names runner.sweeps.launcher.PopulationLauncher here and adds nothing."""

from runner.sweeps import launcher


class PopulationLauncher(launcher.PopulationLauncher):
    pass
