"""`hydra/launcher=population`: runner.sweeps.launcher.PopulationLauncher, found by Hydra here, since it takes plugins
only from classes defined in hydra_plugins; its config entry is stored here."""

from hydra.core.config_store import ConfigStore

from runner.sweeps import launcher


class PopulationLauncher(launcher.PopulationLauncher):
    pass


ConfigStore.instance().store(group="hydra/launcher", name="population", node=launcher.PopulationLauncherConf,
                             provider="runner")
