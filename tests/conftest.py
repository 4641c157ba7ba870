"""Shared fixtures: the shipped configs read through their schemas, the bundled heart data, small CSVs."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from runner.config import DatasetConfig, EvalConfig
from runner.paths import conf_dir


def shipped(group: str, name: str, schema: type, **overrides):
    """A conf/<group>/<name>.yaml merged onto its schema, as Hydra would compose it."""
    return OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(conf_dir() / group / f"{name}.yaml"),
                           overrides)


@pytest.fixture(scope="session")
def heart():
    """The bundled heart Dataset as conf/dataset/heart.yaml loads it."""
    from runner.data import load_dataset

    return load_dataset(shipped("dataset", "heart", DatasetConfig))


@pytest.fixture
def write_csv(tmp_path):
    """Write a DataFrame to tmp_path/<name> and return the path as a string."""

    def write(frame: pd.DataFrame, name: str = "data.csv") -> str:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return str(path)

    return write


@pytest.fixture
def eval_cfg():
    """Build the shipped conf/eval/<name>.yaml with overrides, checked by EvalConfig."""
    return lambda name="holdout", **overrides: shipped("eval", name, EvalConfig, **overrides)
