"""Each member's own values of the hyperparameters that a population's members may differ in.

A sweep's jobs that differ only in these values train as one population (runner.config.sharing.PER_MEMBER
lists the config keys); every piece of fit state reads its member's value from here, so a member trains
exactly as it would alone.
"""

import math

import numpy as np

from runner.config.schema import Config

# name -> how to read it from a Config (a patience of None never stops: inf).
READERS = {
    "lr": lambda c: c.optim.lr,
    "weight_decay": lambda c: c.optim.weight_decay,
    "momentum": lambda c: c.optim.momentum,
    "beta1": lambda c: c.optim.betas[0],
    "beta2": lambda c: c.optim.betas[1],
    "l1": lambda c: c.reg.l1,
    "l2": lambda c: c.reg.l2,
    "label_smoothing": lambda c: c.loss.label_smoothing,
    "patience": lambda c: math.inf if c.trainer.early_stopping.patience is None else c.trainer.early_stopping.patience,
    "min_delta": lambda c: c.trainer.early_stopping.min_delta,
}


def member_values(cfg: Config, member_cfgs: list[Config] | None, members: int) -> dict[str, np.ndarray]:
    """name -> [E] float64: each member's value, from its own config (`member_cfgs`) or the shared `cfg`."""
    cfgs = member_cfgs if member_cfgs is not None else [cfg] * members
    if len(cfgs) != members:
        raise ValueError(f"{len(cfgs)} member configs for a population of {members}")
    return {name: np.array([float(read(c)) for c in cfgs]) for name, read in READERS.items()}
