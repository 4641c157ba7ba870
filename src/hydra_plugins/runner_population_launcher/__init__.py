"""runner's Hydra plugins under runner's own names (`hydra/launcher=population`, `population_slurm`,
`runner_submitit_local`, `runner_submitit_slurm`, `hydra/sweeper=runner_grid`): other Hydra apps in the same
environment keep Hydra's `basic`, `submitit_*` and `optuna`. Each module here registers its config entry, so Hydra's
plugin scanner, which runs these modules again whenever it scans, registers it again after a test wipes the
ConfigStore (hydra_restore_singletons)."""
