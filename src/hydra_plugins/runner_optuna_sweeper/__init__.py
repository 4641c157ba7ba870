"""`hydra/sweeper=runner_optuna`: runner's Optuna sweeper (runner.sweeps.optuna says why it is our own); Hydra's
`optuna` stays hydra-optuna-sweeper's for other apps (runner's app maps `optuna` to this one)."""
