"""`hydra/launcher=runner_submitit_slurm` and `runner_submitit_local` (Hydra's submitit plugin with runner's fault
handling: runner.sweeps.submitit_jobs), found by Hydra here, since it takes plugins only from classes defined in
hydra_plugins; their config entries are stored here, and only when the submitit plugin is installed. Hydra's own
`submitit_slurm` and `submitit_local` stay the plugin's."""

from hydra.core.config_store import ConfigStore

from runner.sweeps import submitit_jobs

if submitit_jobs.plugin is not None:
    # the plugin's classes as this scan made them (Hydra's scanner runs the plugin's modules again, first)
    plugin = submitit_jobs.plugin

    class SlurmLauncher(submitit_jobs.FaultTolerant, plugin.SlurmLauncher):
        pass

    class LocalLauncher(submitit_jobs.FaultTolerant, plugin.LocalLauncher):
        pass

    ConfigStore.instance().store(group="hydra/launcher", name="runner_submitit_slurm", provider="runner",
                                 node=submitit_jobs.plugin_config.SlurmQueueConf(_target_=f"{__name__}.SlurmLauncher"))
    ConfigStore.instance().store(group="hydra/launcher", name="runner_submitit_local", provider="runner",
                                 node=submitit_jobs.plugin_config.LocalQueueConf(_target_=f"{__name__}.LocalLauncher"))
