"""`hydra/launcher=population_slurm`: runner.sweeps.slurm.PopulationSlurmLauncher, found by Hydra here, since it takes
plugins only from classes defined in hydra_plugins; its config entry is stored here (and under its older name
population_slurm_schema, which a user's launcher config may extend)."""

from hydra.core.config_store import ConfigStore

from runner.sweeps import slurm


class PopulationSlurmLauncher(slurm.PopulationSlurmLauncher):
    pass


for _name in ("population_slurm_schema", "population_slurm"):
    ConfigStore.instance().store(group="hydra/launcher", name=_name, node=slurm.PopulationSlurmConf, provider="runner")
