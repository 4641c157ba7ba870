"""Members of one population with different hyperparameters: each trains exactly as it would alone.

This is what lets a sweep's jobs (optim.lr x optim.weight_decay, ...) train as one population."""

import copy
from dataclasses import is_dataclass

import numpy as np
import pytest
import torch

from helpers import fit_population
from runner.config.schema import Config, EarlyStoppingConfig, ModelConfig, OptimConfig, OptimName, SchedConfig, SchedName, TrainerConfig
from runner.engine.hyper import READERS, member_values
from runner.config.sharing import PER_MEMBER, group_key


def _data(E, n=90, d=7, classes=2, seed=0):
    g = np.random.default_rng(seed)
    X = torch.from_numpy(g.normal(size=(n, d)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, classes, n).astype(np.float32))
    train = [np.sort(g.choice(n, size=60 - e % 3, replace=False)) for e in range(E)]
    val = [np.setdiff1d(np.arange(n), t)[:20] for t in train]
    return X, y, train, val


def _fit(cfg, member_cfgs, X, y, train, val, seeds, loss):
    return fit_population(cfg, X, y, list(zip(train, val)), seeds, loss, 3 if loss == "ce" else 1,
                          member_cfgs=member_cfgs)


def _job(base: Config, **values) -> Config:
    cfg = copy.deepcopy(base)
    for dotted, value in values.items():
        *path, name = dotted.split("__")
        node = cfg
        for part in path:
            node = getattr(node, part)
        setattr(node, name, value)
    return cfg


def _base(optim: OptimName, sched=SchedName.constant) -> Config:
    return Config(model=ModelConfig(hidden=[8]), optim=OptimConfig(name=optim),
                  sched=SchedConfig(name=sched, step_size=3, gamma=0.5),
                  trainer=TrainerConfig(epochs=8, batch_size=16, early_stopping=EarlyStoppingConfig(patience=3)))


# Each member its own value of every per-member key (0 beside non-zero: the term must vanish exactly).
JOBS = [
    dict(optim__lr=0.01, optim__weight_decay=0.0, optim__momentum=0.9, optim__betas=[0.9, 0.999], reg__l2=0.0,
         reg__l1=0.01, loss__label_smoothing=0.0, trainer__early_stopping__patience=2),
    dict(optim__lr=0.03, optim__weight_decay=0.1, optim__momentum=0.0, optim__betas=[0.8, 0.99], reg__l2=0.05,
         reg__l1=0.0, loss__label_smoothing=0.1, trainer__early_stopping__patience=None),
    dict(optim__lr=0.003, optim__weight_decay=0.01, optim__momentum=0.5, optim__betas=[0.95, 0.9], reg__l2=0.01,
         reg__l1=0.0, loss__label_smoothing=0.2, trainer__early_stopping__patience=4,
         trainer__early_stopping__min_delta=0.01),
]


@pytest.mark.parametrize("optim,sched", [(OptimName.adam, SchedName.constant), (OptimName.adamw, SchedName.step),
                                         (OptimName.sgd, SchedName.cosine), (OptimName.rmsprop, SchedName.plateau)])
@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_members_with_their_own_hyperparameters_equal_each_alone(optim, sched, loss):
    base = _base(optim, sched)
    jobs = [_job(base, **values) for values in JOBS]
    seeds = [3, 11, 5]
    X, y, train, val = _data(3, classes=3 if loss == "ce" else 2)
    stacked = _fit(base, jobs, X, y, train, val, seeds, loss)
    for e, seed in enumerate(seeds):
        alone = _fit(jobs[e], None, X, y, [train[e]], [val[e]], [seed], loss)
        torch.testing.assert_close(stacked.last[e], alone.last[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(stacked.best[e], alone.best[0], atol=1e-6, rtol=0)
        assert stacked.epochs_run[e] == alone.epochs_run[0] and stacked.best_epoch[e] == alone.best_epoch[0]
        ran = len(alone.history["lr"])
        np.testing.assert_allclose(stacked.history["lr"][:ran, e], alone.history["lr"][:, 0], rtol=1e-7)
    assert len(set(stacked.history["lr"][0])) == 3  # each member's own rate


def test_member_values_read_each_members_config():
    base = _base(OptimName.adam)
    jobs = [_job(base, **values) for values in JOBS]
    values = member_values(base, jobs, 3)
    np.testing.assert_array_equal(values["lr"], [0.01, 0.03, 0.003])
    np.testing.assert_array_equal(values["beta1"], [0.9, 0.8, 0.95])
    assert values["patience"][1] == np.inf and values["min_delta"][2] == 0.01
    np.testing.assert_array_equal(member_values(base, None, 2)["lr"], [0.001, 0.001])
    with pytest.raises(ValueError):
        member_values(base, jobs, 2)


def test_group_key_ignores_exactly_the_per_member_keys():
    base = Config()
    others = [_job(base, **values) for values in JOBS] + [_job(base, trainer__seed=4, eval__split_seed=2,
                                                               trainer__progress=False)]
    assert len({group_key(c) for c in [base, *others]}) == 1
    for apart in (dict(model__hidden=[32]), dict(trainer__batch_size=64), dict(optim__name=OptimName.sgd),
                  dict(model__dropout=0.2), dict(sched__gamma=0.5), dict(trainer__epochs=7)):
        assert group_key(_job(base, **apart)) != group_key(base), apart
    assert "optim.lr" in PER_MEMBER and "model.dropout" not in PER_MEMBER


class _Reads:
    """A config that records the dotted key of every value read from it."""

    def __init__(self, node, prefix: str, seen: set):
        self._node, self._prefix, self._seen = node, prefix, seen

    def __getattr__(self, name):
        value, key = getattr(self._node, name), self._prefix + name
        if is_dataclass(value):
            return _Reads(value, key + ".", self._seen)
        self._seen.add(key)
        return value


def test_the_keys_members_may_differ_in_are_exactly_those_the_engine_reads_per_member():
    """A key in PER_MEMBER that no member reads for itself would let jobs share a population and silently train
    with the shared value; one read per member but missing there would keep such jobs apart for nothing."""
    planned = {"trainer.seed", "trainer.seeds", "eval.split_seed"}  # each job's own member plan: seeds and rows
    read: set[str] = set()
    for reader in READERS.values():
        reader(_Reads(Config(), "", read))
    assert read == set(PER_MEMBER) - planned and planned <= set(PER_MEMBER)


@pytest.mark.parametrize("optim,key,value", [
    (OptimName.sgd, "optim__lr", 0.05), (OptimName.sgd, "optim__weight_decay", 0.5),
    (OptimName.sgd, "optim__momentum", 0.9), (OptimName.adam, "optim__betas", [0.5, 0.9]),
    (OptimName.adamw, "optim__weight_decay", 0.5), (OptimName.adam, "reg__l1", 0.1), (OptimName.adam, "reg__l2", 0.5),
    (OptimName.adam, "loss__label_smoothing", 0.3), (OptimName.adam, "trainer__early_stopping__patience", 1),
    (OptimName.adam, "trainer__early_stopping__min_delta", 10.0),
])
def test_each_members_own_value_is_the_one_applied(optim, key, value):
    # Two members on the same rows from the same seed, one with its own value of `key`: they must part ways,
    # and the second must equal a run configured with that value directly.
    base = _job(_base(optim), optim__lr=0.01, trainer__early_stopping__patience=None)
    own = _job(base, **{key: value})
    X, y, train, val = _data(1)
    if key.endswith("min_delta"):
        y = (X[:, 0] > 0).float()  # learnable, so validation improves unless min_delta forbids it
    both = _fit(base, [base, own], X, y, train * 2, val * 2, [3, 3], "bce")
    assert (not torch.allclose(both.last[0], both.last[1], atol=1e-4) or both.epochs_run[0] != both.epochs_run[1]
            or both.best_epoch[0] != both.best_epoch[1])
    direct = _fit(own, None, X, y, train, val, [3], "bce")
    torch.testing.assert_close(both.last[1], direct.last[0], atol=1e-6, rtol=0)
    assert both.best_epoch[1] == direct.best_epoch[0]
