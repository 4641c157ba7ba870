"""runner: an experiment runner for small models on small data."""

__version__ = "0.1.0"
