"""Which config values may differ between the members of one population, and the key that groups sweep jobs.

Jobs of a sweep whose configs are equal except for the keys in PER_MEMBER (and settings that do not
touch training, NOT_TRAINING) train as one population: each member carries its own job's values of
these keys, and "stacked equals alone" makes every job's result the same as its run alone.
Imports no torch, so the launcher can group jobs before anything heavy loads.
"""

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Values each member of a population may hold for itself: its seeds and split (each job plans its own members), and
# what engine/hyper.READERS reads per member (tests/test_member_hyper.py holds the two equal). Not here:
# dropout rates, schedule parameters and augmentation strengths (jobs differing in them train apart).
PER_MEMBER: tuple[str, ...] = (
    "trainer.seed",
    "trainer.seeds",
    "eval.split_seed",
    "optim.lr",
    "optim.weight_decay",
    "optim.momentum",
    "optim.betas",
    "reg.l1",
    "reg.l2",
    "loss.label_smoothing",
    "trainer.early_stopping.patience",
    "trainer.early_stopping.min_delta",
)

# Settings that change nothing a member learns: a job's own choice, whatever population trains it.
NOT_TRAINING: tuple[str, ...] = (
    "trainer.progress",
    "trainer.stack",  # how many members step together: the same weights either way
    "trainer.checkpoint_every",
    "trainer.threads",
    "trainer.workers",  # how many processes train the groups: the same weights either way
    "overwrite",
    "plots",
)


def group_key(cfg: Any) -> str:
    """A key equal for two job configs exactly when their jobs may train as one population."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if isinstance(cfg, DictConfig) else _plain(cfg)
    for dotted in (*PER_MEMBER, *NOT_TRAINING):
        _drop(plain, dotted.split("."))
    return json.dumps(plain, sort_keys=True, default=str)


def _plain(cfg: Any) -> dict:
    """A Config dataclass as a plain dict (enums as their names)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)  # type: ignore[return-value]


def _drop(node: dict, path: list[str]) -> None:
    if len(path) == 1:
        node.pop(path[0], None)
    elif isinstance(node.get(path[0]), dict):
        _drop(node[path[0]], path[1:])
