"""Hydra's `hydra/launcher=population`: a sweep's compatible jobs train as one population (runner's default for -m)."""
