"""Where the shipped configs and bundled data live, installed as a wheel or run from a checkout."""

from importlib import resources
from pathlib import Path


def _shipped(wheel_name: str, checkout_name: str) -> Path:
    # A wheel carries conf/ and data/ inside the package; a checkout (editable install) has them
    # at the repository root.
    inside = Path(str(resources.files("runner"))) / wheel_name
    if inside.exists():
        return inside
    return Path(__file__).resolve().parents[2] / checkout_name


def conf_dir() -> Path:
    """The directory of the shipped Hydra configs."""
    return _shipped("conf", "conf")


def bundled_data(filename: str) -> Path:
    """The path of a dataset file bundled with runner (`data/` in a checkout)."""
    return _shipped("bundled", "data") / filename
