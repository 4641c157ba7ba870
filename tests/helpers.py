"""Helpers the tests share: one population fit as the engine runs it, the checks that two fits are the same, and
the check that user errors are one line."""

import numpy as np
import pytest
import torch

from runner.errors import RunnerError


def assert_one_line_errors(cases, call) -> None:
    """Each (argument, expected) of `cases`: call(argument) raises a RunnerError of one line holding `expected`."""
    for argument, expected in cases:
        with pytest.raises(RunnerError) as info:
            call(argument)
        message = str(info.value)
        assert expected in message, (expected, message)
        assert "\n" not in message


def fit_population(cfg, X, y, rows, seeds, loss="bce", outputs=None, shift=None, scale=None, device="cpu",
                   inputs=None, used=None, **fit_args):
    """runner.engine.loop.fit of one member per seed, member e trained and validated on rows[e] = (train, val) of
    X, y, standardized with its own shift[e] and scale[e] (none: the rows as they are), or fed `inputs` (a
    MemberInputs) where given; `used` the input columns each member saw in training (model.initialize's). `outputs`
    defaults to the loss's: the classes in y for ce, else 1. `fit_args` go to fit (on_epoch, checkpoint,
    member_cfgs)."""
    from runner.engine.inputs import MemberInputs
    from runner.engine.loop import fit
    from runner.engine.rows import PopulationData
    from runner.models import build_model

    E = len(seeds)
    outputs = outputs or (int(y.max()) + 1 if loss == "ce" else 1)
    model = build_model(cfg.model, E, tuple(X.shape[1:]), outputs, loss).to(device)
    model.initialize(list(seeds), "default", used)
    X, y = X.to(device), y.to(device)
    if inputs is None and shift is None:
        inputs = MemberInputs.identity(X, y, E)
    elif inputs is None:
        inputs = MemberInputs(X, y, torch.as_tensor(shift, device=device), torch.as_tensor(scale, device=device))
    data = PopulationData(inputs, [r[0] for r in rows], [r[1] for r in rows], list(seeds))
    return fit(model, data, cfg, loss, **fit_args)


def ragged_rows(n: int, members: int, train: int, seed: int = 0, val: int = 20) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) rows per member: member e trains on `train - e` rows of its own (ragged: some members sit out a
    batch), and validates on `val` of the others."""
    g = np.random.default_rng(seed)
    out = []
    for e in range(members):
        chosen = np.sort(g.choice(n, size=train - e, replace=False))
        out.append((chosen, np.setdiff1d(np.arange(n), chosen)[:val]))
    return out


def assert_member_equals_alone(stacked, e: int, alone, atol: float = 1e-5) -> None:
    """Member e of the `stacked` fit ended as the only member of `alone`: weights (best and last), running
    statistics, every average, its epochs and its validation curve."""
    for name in ("last", "best", "last_stats", "best_stats"):
        torch.testing.assert_close(getattr(stacked, name)[e], getattr(alone, name)[0], atol=atol, rtol=0,
                                   msg=lambda m, name=name: f"member {e} {name}: {m}")
    assert stacked.epochs_run[e] == alone.epochs_run[0] and stacked.best_epoch[e] == alone.best_epoch[0]
    ran = len(alone.history["val/loss"])
    np.testing.assert_allclose(stacked.history["val/loss"][:ran, e], alone.history["val/loss"][:, 0], atol=atol)
    assert np.isnan(stacked.history["val/loss"][ran:, e]).all()  # it left the population when it stopped
    assert stacked.averages.keys() == alone.averages.keys()
    for name, average in stacked.averages.items():
        torch.testing.assert_close(average.flat[e], alone.averages[name].flat[0], atol=atol, rtol=0)
        torch.testing.assert_close(average.stats[e], alone.averages[name].stats[0], atol=atol, rtol=0)
        assert average.epochs[e] == alone.averages[name].epochs[0], name


def assert_same_fit(a, b) -> None:
    """Two fits ended bit for bit the same: weights, statistics, curves, epochs and averages."""
    for name in ("best", "last", "best_stats", "last_stats"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.history.keys() == b.history.keys()
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name])
    np.testing.assert_array_equal(a.epochs_run, b.epochs_run)
    np.testing.assert_array_equal(a.best_epoch, b.best_epoch)
    assert a.averages.keys() == b.averages.keys()
    for name, averaged in a.averages.items():
        assert torch.equal(averaged.flat, b.averages[name].flat), name
        assert averaged.epochs == b.averages[name].epochs
