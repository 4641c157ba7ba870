"""Shared fixtures: the shipped configs read through their schemas, the bundled heart data, small CSVs."""

import signal
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from runner.config.schema import DatasetConfig, EvalConfig
from runner.paths import conf_dir

# Ctrl-C as a user's terminal gives it: a suite started where SIGINT is ignored (a background job of a
# non-interactive shell, so its pytest-xdist workers too) gets no KeyboardInterrupt from Python, and the tests that
# send SIGINT to a run (in this process or a child, which inherits an ignored signal) would see nothing happen.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def population_runner():
    """population_runner(cfg, pre, members)(sel): train the members at positions `sel` as one population."""
    import torch

    from helpers import fit_population
    from runner.engine.inputs import MemberInputs

    def make(cfg, pre, members, loss="bce", outputs=1):
        everyone = MemberInputs.from_preprocessed(pre, "cpu")

        def run(sel):
            keep = torch.zeros(len(members), dtype=torch.bool)
            keep[sel] = True
            return fit_population(cfg, everyone.X, everyone.y, [(members[i].train, members[i].val) for i in sel],
                                  [members[i].seed for i in sel], loss, outputs, inputs=everyone.select(keep),
                                  used=None if pre.used is None else pre.used[sel])

        return run

    return make


@pytest.fixture(scope="session")
def compose():
    """compose(overrides): the typed Config that `runner train OVERRIDES` runs with (Hydra over conf/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from runner.config.schema import register

    def make(overrides=()):
        register()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return OmegaConf.to_object(hydra_compose("config", overrides=list(overrides)))

    return make


@pytest.fixture
def train(capsys, monkeypatch):
    """Run `runner train ARGS` in-process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # train_command hands sys.argv to Hydra

    def run(*args):
        from runner.commands.cli import main

        status = main(["train", *args])
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


def stop_after_first_epoch(real):
    """`real` (engine.loop.fit, as runner.engine.stacking imports and calls it) wrapped to stop with Ctrl-C after the
    first epoch, as a user would interrupt it."""

    def stop_after_one(model, data, cfg, loss, on_epoch, *args, **kwargs):
        def once(epoch, active):
            on_epoch(epoch, active)
            raise KeyboardInterrupt

        return real(model, data, cfg, loss, once, *args, **kwargs)

    return stop_after_one


def every_number(node, path=""):
    """Every value of a results.json by its dotted path (timing and stacking left out: how long, and in which groups
    and processes, a job trained differ between two runs of the same job, on a cluster's task and on a laptop)."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() if key not in ("timing", "stacking")
                for k, v in every_number(value, f"{path}.{key}").items()}
    if isinstance(node, list):
        return {k: v for i, value in enumerate(node) for k, v in every_number(value, f"{path}[{i}]").items()}
    return {path: node}
