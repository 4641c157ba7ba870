"""runner: an experiment runner for small models on small data."""

__version__ = "0.1.0"

from runner.api import Result, load, sweep, train  # noqa: E402 (the Python surface; light: nothing heavy imported)
from runner.errors import RunnerError  # noqa: E402 (what a user error raises)

__all__ = ["Result", "RunnerError", "load", "sweep", "train", "__version__"]
