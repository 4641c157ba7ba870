"""runner: an experiment runner for small models on small data."""

__version__ = "0.1.0"

from runner.api import Result, load, sweep, train  # noqa: E402 (the Python surface; light: nothing heavy imported)

__all__ = ["Result", "load", "sweep", "train", "__version__"]
