"""Weight averaging within a member: each average against its definition, recomputed from independent fits."""

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from runner.config.schema import AvgConfig, AvgName, Config, EarlyStoppingConfig, ModelConfig, Norm, OptimConfig, TrainerConfig
from runner.config.checks import validate
from runner.engine.averaging import Averages, recompute_batch_norm
from runner.engine.inputs import MemberInputs
from runner.errors import RunnerError
from helpers import fit_population
from runner.models import build_model

SEEDS = [3, 11]


def _data(E=2, n=90, d=5):
    g = np.random.default_rng(0)
    X = torch.from_numpy(g.normal(size=(n, d)).astype(np.float32))
    y = torch.from_numpy((X[:, 0].numpy() + g.normal(size=n) > 0).astype(np.float32))
    train = [np.sort(g.choice(n, size=60, replace=False)) for _ in range(E)]
    val = [np.setdiff1d(np.arange(n), t)[:25] for t in train]
    return X, y, train, val


def _fit(epochs, avg=None, batch=16, data=None):
    X, y, train, val = data or _data(len(SEEDS))
    cfg = Config(optim=OptimConfig(lr=0.05), model=ModelConfig(hidden=[8]),
                 avg=avg or AvgConfig(), trainer=TrainerConfig(
                     epochs=epochs, batch_size=batch, early_stopping=EarlyStoppingConfig(patience=None)))
    return fit_population(cfg, X, y, list(zip(train, val)), SEEDS)


@pytest.fixture(scope="module")
def after():
    """Each member's weights after 1..8 epochs, from independent fits (the trajectory does not depend on epochs)."""
    return {n: _fit(n).last for n in range(1, 9)}


def test_last_k_is_the_mean_of_the_last_k_checkpoints(after):
    result = _fit(8, AvgConfig(name=AvgName.last, k=3))
    expected = (after[6] + after[7] + after[8]) / 3
    torch.testing.assert_close(result.averages["last"].flat, expected, atol=1e-6, rtol=0)
    assert result.averages["last"].epochs == [[5, 6, 7], [5, 6, 7]]


def test_best_k_is_the_mean_of_the_k_best_epochs_by_validation(after):
    result = _fit(8, AvgConfig(name=AvgName.best, k=3))
    loss = result.history["val/loss"]  # [epochs, E]
    for e in range(len(SEEDS)):
        best = sorted(np.argsort(loss[:, e], kind="stable")[:3].tolist())
        assert result.averages["best"].epochs[e] == best
        expected = sum(after[i + 1][e] for i in best) / 3
        torch.testing.assert_close(result.averages["best"].flat[e], expected, atol=1e-6, rtol=0)


def test_swa_is_the_running_mean_from_start_epoch(after):
    result = _fit(8, AvgConfig(name=AvgName.swa, start_epoch=5))
    torch.testing.assert_close(result.averages["swa"].flat, sum(after[n] for n in (6, 7, 8)) / 3, atol=1e-6, rtol=0)
    assert result.averages["swa"].epochs[0] == [5, 6, 7]


def test_ema_over_full_batch_steps_equals_a_hand_computed_ema(after):
    # Full batch: one step per epoch, so the EMA runs over the epoch-end weights.
    data = _data()
    steps = [_fit(n, batch=60, data=data).last for n in (1, 2, 3)]
    result = _fit(3, AvgConfig(name=AvgName.ema, decay=0.9, warmup=False), batch=60, data=data)
    hand = steps[0]
    hand = 0.9 * hand + 0.1 * steps[1]
    hand = 0.9 * hand + 0.1 * steps[2]
    torch.testing.assert_close(result.averages["ema"].flat, hand, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_running_averages_equal_torch_averaged_model(kind):
    g = torch.Generator().manual_seed(0)
    points = [torch.randn(1, 6, generator=g) for _ in range(5)]
    param = torch.nn.Parameter(points[0][0].clone())
    holder = torch.nn.Module()
    holder.p = param
    ref = AveragedModel(holder, multi_avg_fn=get_ema_multi_avg_fn(0.8)) if kind == "ema" else AveragedModel(holder)
    ours = Averages(AvgConfig(name=AvgName(kind), decay=0.8, warmup=False, start_epoch=0), points[0])
    for i, p in enumerate(points):
        with torch.no_grad():
            param.copy_(p[0])
        ref.update_parameters(holder)
        ours.step(p, torch.ones(1, dtype=torch.bool))
        ours.epoch(i, p, None, torch.ones(1, dtype=torch.bool))
    got = ours.ema if kind == "ema" else ours.swa
    torch.testing.assert_close(got[0], ref.module.p.detach(), atol=1e-6, rtol=0)


def test_greedy_soup_is_no_worse_on_validation_than_its_best_ingredient():
    result = _fit(12, AvgConfig(name=AvgName.compare, ingredients=6, start_epoch=2))
    X, y, train, val = _data()
    model = build_model(ModelConfig(hidden=[8]), 2, X.shape[-1], 1)
    for e in range(2):
        with torch.no_grad():
            model.flat.copy_(result.averages["greedy_soup"].flat)
        model.eval()
        logits = model(X[val[e]].unsqueeze(0).expand(2, -1, -1))[e, :, 0]
        greedy = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[val[e]]).item()
        assert greedy <= result.history["val/loss"][:, e].min() + 1e-6
        assert result.averages["greedy_soup"].epochs[e][0] in result.averages["soup"].epochs[e]


def test_averaging_across_members_is_refused_with_a_pointer_to_ensembles():
    with pytest.raises(RunnerError, match="prediction ensemble"):
        validate(Config(avg=AvgConfig(name=AvgName.last, over="population")))


@pytest.mark.parametrize("avg, message", [
    (AvgConfig(k=0), "avg.k=0 is not valid: use an integer >= 1"),
    (AvgConfig(ingredients=0), "avg.ingredients=0 is not valid: use an integer >= 1"),
    (AvgConfig(start_epoch=-1), "avg.start_epoch=-1 is not valid: use an integer >= 0"),
    (AvgConfig(decay=1.0), "avg.decay=1.0 is not valid: use a value in (0, 1), e.g. 0.99"),
    (AvgConfig(lr=0.0), "avg.lr=0.0 is not valid: use a positive learning rate, or null"),
    (AvgConfig(name=AvgName.swa, start_epoch=5), "avg.start_epoch=5 is not valid: SWA averages the epochs from"),
])
def test_averaging_values_are_refused_by_the_config_table_before_torch_trains(avg, message):
    cfg = Config(avg=avg, trainer=TrainerConfig(epochs=5))
    with pytest.raises(RunnerError) as caught:
        validate(cfg)
    assert str(caught.value).startswith(message)
    cfg.avg.name = AvgName.ema  # start_epoch only bounds SWA's averaging
    if avg.name == AvgName.swa:
        validate(cfg)


def test_batch_norm_statistics_are_recomputed_on_the_training_rows():
    X, y, train, val = _data()
    model = build_model(ModelConfig(hidden=[4], norm=Norm.batch), 2, X.shape[-1], 1)
    model.initialize(SEEDS, "default")
    inputs = MemberInputs.identity(X, y, 2)
    stats = recompute_batch_norm(model, inputs, train, batch=1000)  # one batch: the statistics of all rows
    for e in range(2):
        h = X[train[e]] @ model.view("dense0.weight")[e]
        torch.testing.assert_close(stats[e, :4], h.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(stats[e, 4:], h.var(0, unbiased=True), atol=1e-5, rtol=1e-5)


def test_averaging_on_the_default_holdout_plan_scores_every_average(tmp_path):
    """The default plan (one model, intervals over test rows) scores each average like the restored best."""
    import json

    from runner.commands.cli import main

    run = tmp_path / "run"
    assert main(["train", "avg=compare", "avg.start_epoch=4", "trainer.epochs=8", "trainer.progress=false",
                 f"hydra.run.dir={run}"]) == 0
    averaging = json.loads((run / "results.json").read_text())["averaging"]
    assert {"ema", "swa"} <= set(averaging)
    for d in averaging.values():
        acc = d["test"]["test/accuracy"]
        assert 0 <= acc["ci95"][0] <= acc["mean"] <= acc["ci95"][1] <= 1


class _BatchNormNet(torch.nn.Module):
    """A user's module whose batch norm has momentum 0.01, not torch's default 0.1."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a = torch.nn.Linear(input_shape[0], 6)
        self.bn = torch.nn.BatchNorm1d(6, momentum=0.01)
        self.b = torch.nn.Linear(6, out_features)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))))


@pytest.mark.parametrize("path", ["fast", "vmap"])
def test_recomputed_batch_norm_equals_torch_update_bn_whatever_the_layers_momentum(path):
    from torch.optim.swa_utils import update_bn

    from runner.models.module import give

    X, y, train, _ = _data()
    model = build_model(ModelConfig(name="module", target=give(_BatchNormNet), path=path), 2, [X.shape[-1]], 1)
    model.initialize(SEEDS, "default")
    with torch.no_grad():
        model.flat.add_(0.3 * torch.randn_like(model.flat))  # weights as after averaging: not the initial ones
    stats = recompute_batch_norm(model, MemberInputs.identity(X, y, 2), train, batch=16)  # 60 rows: 4 batches
    (mean_at, width, _), (var_at, _, _) = model.stat_slots.values()
    for e in range(2):
        alone = _BatchNormNet([X.shape[-1]], 1)
        alone.load_state_dict({n.replace("norm:", ""): model.view(n)[e] for n in model.slots}, strict=False)
        rows = torch.utils.data.DataLoader(X[train[e]], batch_size=16)
        update_bn(rows, alone)
        assert alone.bn.momentum == 0.01  # update_bn puts it back after its pass
        torch.testing.assert_close(stats[e, mean_at : mean_at + width], alone.bn.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats[e, var_at : var_at + width], alone.bn.running_var, atol=1e-5, rtol=1e-5)
        assert (alone.bn.running_mean.abs() > 0.05).any()  # statistics far from 10x too small or zero
