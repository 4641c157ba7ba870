"""A population of sampled configurations: each seed its own hyperparameters drawn from `sample.*` ranges.

Member m with trainer seed s gets the configuration drawn from the stream (sample.seed, s), so every split
trains the same configurations (a configuration is comparable across folds), and a run with more seeds keeps
the draws of a run with fewer. Only values the engine reads per member (runner.engine.hyper) are drawn, so
the whole population still trains as one stacked loop, each member exactly as it would alone.
"""

import copy
import math

import numpy as np

from runner.config.schema import Config

# sample key -> (where it goes in a Config, log-uniform?)
DRAWN = {"lr": (("optim", "lr"), True), "weight_decay": (("optim", "weight_decay"), True),
         "label_smoothing": (("loss", "label_smoothing"), False)}


def sampled(cfg: Config) -> bool:
    """Whether the run draws any hyperparameter per seed."""
    return any(getattr(cfg.sample, key) is not None for key in DRAWN)


def draw(cfg: Config, seed: int, regression: bool = False) -> dict[str, float]:
    """The values drawn for trainer seed `seed` (label smoothing not for a regression: its loss has none)."""
    u = np.random.default_rng([cfg.sample.seed, seed]).random(len(DRAWN))  # every key its own number, always
    out = {}
    for (key, (_, log)), x in zip(DRAWN.items(), u):
        bounds = getattr(cfg.sample, key)
        if bounds is None or (key == "label_smoothing" and regression):
            continue
        low, high = (math.log(b) for b in bounds) if log else bounds
        value = low + x * (high - low)
        out[key] = float(math.exp(value) if log else value)
    return out


def member_configs(cfg: Config, members, regression: bool = False) -> list[Config] | None:
    """Each member's own config with its seed's draws in place (None when nothing is sampled)."""
    if not sampled(cfg):
        return None
    by_seed = {}
    for m in members:
        if m.seed not in by_seed:
            own = copy.deepcopy(cfg)
            for key, value in draw(cfg, m.seed, regression).items():
                group, name = DRAWN[key][0]
                setattr(getattr(own, group), name, value)
            by_seed[m.seed] = own
    return [by_seed[m.seed] for m in members]


def record(cfg: Config, seeds, regression: bool = False) -> list[dict]:
    """results.json's `sampled`: each seed's drawn values."""
    return [{"seed": int(s), **draw(cfg, s, regression)} for s in seeds]
