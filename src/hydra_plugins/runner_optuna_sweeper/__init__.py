"""`hydra/sweeper=optuna`: runner's Optuna sweeper (see optuna_sweeper.py for why it is our own)."""
