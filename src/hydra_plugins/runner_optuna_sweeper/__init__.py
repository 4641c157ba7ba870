"""`hydra/sweeper=optuna`: runner's Optuna sweeper (runner.sweeps.optuna says why it is our own)."""
