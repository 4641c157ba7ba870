"""Where Hydra discovers runner's hydra/launcher=submitit_slurm and submitit_local (Hydra's submitit plugin with
runner's fault handling: runner.sweeps.submitit_jobs); it takes plugins only from classes defined in hydra_plugins."""

from runner.sweeps import submitit_jobs

if submitit_jobs.plugin is not None:

    class SlurmLauncher(submitit_jobs.SlurmLauncher):
        pass

    class LocalLauncher(submitit_jobs.LocalLauncher):
        pass
