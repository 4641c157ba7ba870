"""Where Hydra discovers `hydra/launcher=population_slurm`: it takes plugins only from classes defined in hydra_plugins,
so this names runner.sweeps.slurm.PopulationSlurmLauncher here and adds nothing."""

from runner.sweeps import slurm


class PopulationSlurmLauncher(slurm.PopulationSlurmLauncher):
    pass
