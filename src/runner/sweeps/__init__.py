"""Sweeps (-m): jobs grouped into populations, the launcher and sweepers Hydra discovers, Optuna search, the summary."""
