"""The stacked engine: each member its own noise and optimizer step, as torch.optim steps it alone; the heart study's
population equals its members alone (every model and path: test_contract.py)."""

import math

import numpy as np
import pytest
import torch

from runner.config.schema import Config, ModelConfig, OptimConfig, OptimName
from runner.models import build_model


def test_member_noise_is_uniform_and_independent_of_the_population():
    from runner.models.noise import MemberNoise

    noise = MemberNoise([4, 9, 4])
    noise.step = 17
    u = noise.uniform((100_000,), stream=2)
    assert torch.equal(u[0], u[2]) and not torch.equal(u[0], u[1])  # a stream per seed
    alone = MemberNoise([9])
    alone.step = 17
    assert torch.equal(alone.uniform((100_000,), stream=2)[0], u[1])
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    counts = torch.histc(u[1], bins=10, min=0, max=1)
    assert counts.min() > 9_500 and counts.max() < 10_500
    assert abs(torch.corrcoef(torch.stack([u[0], u[1]]))[0, 1].item()) < 0.01
    z = noise.normal((100_000,), stream=0)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    noise.step = 18
    assert not torch.equal(noise.uniform((10,), stream=2), u[:, :10])  # a new step, new draws


def test_population_masks_keyed_on_the_host_equal_each_members_own_keyed_on_the_device():
    """The stacked paths draw each step's keys on the host (MemberNoise.dropout_scale, which the vmap path's
    Dropout takes under vmap), a member run in turn on the device (draw_key, then dropout_scale): the same masks
    for any seeds, step and stream, also after members leave (select)."""
    import random

    from runner.models.functional import Dropout, _member
    from runner.models.noise import MemberNoise, draw_key, dropout_scale

    rng = random.Random(0)
    for _ in range(100):
        noise = MemberNoise([rng.randrange(-2**40, 2**40) for _ in range(rng.randint(2, 6))])
        noise.step, stream = rng.randrange(2**40), rng.randrange(1024)
        shape, p = (rng.randint(1, 7), rng.randint(1, 9)), rng.choice([0.05, 0.5, 0.9])
        masks = noise.dropout_scale(shape, stream, p)
        for e, key in enumerate(noise.keys):
            assert torch.equal(masks[e], dropout_scale(draw_key(key, noise.step, stream), shape, p))
        x = torch.randn(len(noise.keys), *shape)
        running = _member.set((None, noise.step, None, None, noise))
        try:
            assert torch.equal(torch.vmap(Dropout(p, stream))(x), x * masks)
        finally:
            _member.reset(running)
    noise.select(torch.arange(len(noise.keys)) != 0)
    assert torch.equal(noise.dropout_scale(shape, stream, p)[0],
                       dropout_scale(draw_key(noise.keys[0], noise.step, stream), shape, p))


def test_dropout_masks_hashed_in_chunks_equal_one_pass_and_scale_as_torch(monkeypatch):
    """A mask hashed DROPOUT_CHUNK values at a time equals the one hashed at once; its values are 0 and
    float32(1/(1-p)), so a product with it equals torch's inverted dropout x·mask/(1-p); p = 1 drops everything."""
    from runner.models import noise as member_noise

    noise = member_noise.MemberNoise([3, 8])
    noise.step = 5
    whole = noise.dropout_scale((7, 9, 11), 2, 0.3)
    monkeypatch.setattr(member_noise, "DROPOUT_CHUNK", 20)  # 10 positions a chunk: 70 chunks
    assert torch.equal(noise.dropout_scale((7, 9, 11), 2, 0.3), whole)
    assert set(whole.unique().tolist()) == {0.0, float(torch.tensor(1 / 0.7))}
    x = torch.randn(2, 7, 9, 11)
    assert torch.equal(x * whole, x * (whole > 0) * (1 / 0.7))
    assert not noise.dropout_scale((4,), 2, 1.0).any()


def test_the_cpus_numpy_hash_and_the_devices_torch_hash_give_the_masks_of_murmur3s_finalizer(monkeypatch):
    """dropout_scale hashes in numpy on the CPU and in torch's int32 elsewhere: both equal murmur3's fmix32 written
    here on Python integers, for keys of either sign, any p and chunks that split a member's values."""
    import random

    from runner.models import noise as member_noise

    def fmix32(h: int) -> int:
        h ^= h >> 16
        h = h * 0x85EBCA6B & 0xFFFFFFFF
        h ^= h >> 13
        h = h * 0xC2B2AE35 & 0xFFFFFFFF
        return h ^ h >> 16

    rng = random.Random(1)
    monkeypatch.setattr(member_noise, "DROPOUT_CHUNK", 48)  # 16 positions a chunk for 3 keys: 7 chunks of 100
    for p in [0.0, 1e-7, 0.1, 0.5, 0.9999]:
        keys = [rng.randrange(-2**31, 2**31) for _ in range(3)]
        cut = math.ceil(float(np.float32(p)) * (1 << 24)) * 256
        scale = float(np.float32(1 / (1 - p)))
        expected = torch.tensor([[scale if fmix32((k + i * 0x9E3779B9) & 0xFFFFFFFF) >= cut else 0.0
                                  for i in range(100)] for k in keys])
        on_cpu = member_noise.dropout_scale(torch.tensor(keys, dtype=torch.int32), (100,), p)
        as_device = member_noise._torch_scale(torch.tensor(keys, dtype=torch.int32).unsqueeze(-1), 100, cut, p)
        assert torch.equal(on_cpu, expected) and torch.equal(as_device, expected)


def test_dropout_masks_drawn_ahead_for_planned_steps_equal_each_steps_own(monkeypatch):
    """Within a planned epoch a layer draws its masks for the steps to come in one pass (at most AHEAD_BYTES of
    them); each equals the one drawn for that step alone, for a second layer of another shape, for a step out of
    the plan, and after members leave."""
    from runner.models import noise as member_noise

    monkeypatch.setattr(member_noise, "AHEAD_BYTES", 3 * 4 * 4 * 6)  # three steps of [4 members, 6 values]
    planned, alone = member_noise.MemberNoise([1, 2, 3, 4]), member_noise.MemberNoise([1, 2, 3, 4])
    hash_once, passes = member_noise._host_scale, []  # the CPU's hash of keys drawn on the host
    monkeypatch.setattr(member_noise, "_host_scale", lambda keys, *a: passes.append(len(keys)) or hash_once(keys, *a))
    planned.plan(range(40, 48))
    for step in [40, 41, 42, 43, 47, 3]:
        planned.step = alone.step = step
        for shape, stream in [((2, 3), 0), ((4,), 1)]:
            assert torch.equal(planned.dropout_scale(shape, stream, 0.3), alone.dropout_scale(shape, stream, 0.3))
    keep = torch.tensor([True, False, True, True])
    planned.select(keep)
    alone.select(keep)
    planned.step = alone.step = 44
    assert torch.equal(planned.dropout_scale((2, 3), 0, 0.3), alone.dropout_scale((2, 3), 0, 0.3))
    # Steps per pass, the planned population's and the other's in turn: [2, 3] masks for 40-42 in one pass, then
    # 43-45; [4] masks for 40-43 (four fit); 47 is the plan's last step, 3 out of it; after `select`, 44-47 (with
    # three members, four steps fit).
    assert passes == [3, 1, 4, 1, 1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1]


def test_dropout_masks_keep_one_minus_p_each_member_its_own_whatever_the_population():
    from scipy import stats

    from runner.models.noise import MemberNoise

    noise, alone = MemberNoise([4, 9, 4]), MemberNoise([9])
    noise.step = alone.step = 17
    for p in (0.1, 0.3, 0.5):
        keep = noise.dropout_scale((200, 500), 3, p) > 0
        assert keep.shape == (3, 200, 500)
        assert torch.equal(keep[0], keep[2]) and torch.equal(alone.dropout_scale((200, 500), 3, p)[0] > 0, keep[1])
        n = keep[1].numel()
        low, high = stats.binom.interval(0.9999, n, 1 - p)
        assert low <= keep[1].sum().item() <= high  # kept with probability 1 - p
        both = (keep[0] & keep[1]).sum().item()  # two members' masks are independent
        low, high = stats.binom.interval(0.9999, n, (1 - p) ** 2)
        assert low <= both <= high
        rows = keep[1].float().mean(1)  # no position pattern: each row of the mask keeps about 1 - p
        assert rows.std().item() < 4 * (p * (1 - p) / 500) ** 0.5
    assert not torch.equal(noise.dropout_scale((10,), 3, 0.5), noise.dropout_scale((10,), 4, 0.5))  # a stream per layer


def test_default_mlp_has_497_parameters_for_29_inputs():
    assert build_model(ModelConfig(), 3, 29, 1).parameters_per_member() == 29 * 16 + 16 + 16 + 1 == 497


@pytest.mark.parametrize("name,kw", [("adam", {}), ("adamw", {"weight_decay": 0.1}),
                                     ("rmsprop", {"momentum": 0.5, "weight_decay": 0.01}),
                                     ("adagrad", {"weight_decay": 0.01}),
                                     ("sgd", {"momentum": 0.9, "dampening": 0.1}),
                                     ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01})])
def test_one_member_steps_like_torch_optim(name, kw):
    from runner.engine.optim import StackedOptimizer

    torch.manual_seed(0)
    p0 = torch.randn(1, 50, dtype=torch.float64)
    ours = torch.nn.Parameter(p0.clone())
    ref = torch.nn.Parameter(p0.clone())
    cfg = OptimConfig(name=OptimName(name), lr=0.01, **kw)
    if name == "adagrad":
        cfg.eps = 1e-10  # torch's default for Adagrad
    opt = StackedOptimizer(ours, cfg)
    torch_opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                 "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name](
        [ref], lr=0.01, **kw)
    for _ in range(20):
        g = torch.randn(1, 50, dtype=torch.float64)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step(torch.ones(1, dtype=torch.bool))
        torch_opt.step()
    torch.testing.assert_close(ours.data, ref.data, atol=1e-12, rtol=0)


def test_every_optimizer_name_has_its_own_update():
    """A new optim.name without an update fails here, instead of training as another optimizer."""
    from runner.engine.optim import FUSED, TENSOR_OPS

    names = sorted(n.value for n in OptimName)
    assert sorted([*FUSED, *TENSOR_OPS]) == names
    assert len({*FUSED.values(), *TENSOR_OPS.values()}) == len(names)  # no two names share one update


@pytest.mark.parametrize("name,kw", [("adam", {"weight_decay": 0.1}), ("adamw", {"weight_decay": 0.1}),
                                     ("sgd", {"momentum": 0.9, "weight_decay": 0.05}),
                                     ("rmsprop", {"weight_decay": 0.05})])
def test_weight_decay_on_some_entries_steps_like_torch_optim_param_groups(name, kw):
    """`decayed` (a frozen tensor's entries take no decay) is torch.optim with a decay and a no-decay group."""
    from runner.engine.optim import StackedOptimizer

    torch.manual_seed(0)
    p0 = torch.randn(2, 50, dtype=torch.float64)
    decayed = (torch.arange(50) < 30).double()
    ours = torch.nn.Parameter(p0.clone())
    opt = StackedOptimizer(ours, OptimConfig(name=OptimName(name), lr=0.01, **kw), decayed=decayed)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
            "rmsprop": torch.optim.RMSprop}[name]
    refs = [[torch.nn.Parameter(p0[e, :30].clone()), torch.nn.Parameter(p0[e, 30:].clone())] for e in range(2)]
    torch_opts = [kind([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=0.01, **kw) for a, b in refs]
    for step in range(20):
        g = torch.randn(2, 50, dtype=torch.float64)
        ours.grad = g.clone()
        active = torch.tensor([True, step % 3 != 0])  # member 1 sits some steps out
        opt.step(active)
        for e, ((a, b), torch_opt) in enumerate(zip(refs, torch_opts)):
            if active[e]:
                a.grad, b.grad = g[e, :30].clone(), g[e, 30:].clone()
                torch_opt.step()
    for e, (a, b) in enumerate(refs):
        torch.testing.assert_close(ours.data[e], torch.cat([a.data, b.data]), atol=1e-12, rtol=0)


def test_inactive_member_is_frozen():
    from runner.engine.optim import StackedOptimizer

    p = torch.nn.Parameter(torch.randn(2, 5))
    before = p.detach().clone()
    opt = StackedOptimizer(p, OptimConfig(name=OptimName.adamw, lr=0.1, weight_decay=0.5))
    p.grad = torch.ones(2, 5)
    opt.step(torch.tensor([True, False]))
    assert not torch.equal(p[0], before[0])
    assert torch.equal(p[1], before[1])
    assert opt.steps.tolist() == [1.0, 0.0]


def test_heart_kfold_population_equals_members_alone(heart, population_runner):
    """The benchmark's shape: heart, 10 folds (ragged training sets), early stopping on."""
    from runner.config.schema import EvalConfig, EvalName
    from runner.data.preprocess import preprocess
    from runner.data.splits import population_plan

    cfg = Config(eval=EvalConfig(name=EvalName.kfold, k=10))
    cfg.trainer.epochs, cfg.trainer.early_stopping.patience = 12, 3
    dataset = heart
    members = population_plan(dataset.y, dataset.task, cfg.eval, [0, 1])
    run = population_runner(cfg, preprocess(dataset, members), members)

    everyone = list(range(len(members)))
    stacked = run(everyone)
    assert len({len(m.train) for m in members}) > 1  # ragged: some members sit out the last step
    for i in (0, 7, 13, 19):
        alone = run([i])
        torch.testing.assert_close(stacked.best[i], alone.best[0], atol=1e-5, rtol=0)
        assert stacked.epochs_run[i] == alone.epochs_run[0]


def test_a_category_only_in_test_rows_leaves_training_unchanged(heart, eval_cfg, population_runner):
    """A value that occurs only in a member's test rows adds a one-hot column; the member trains exactly as without it."""
    from dataclasses import replace

    from runner.data.preprocess import preprocess
    from runner.data.splits import population_plan

    cfg = Config()
    cfg.trainer.epochs = 15
    members = population_plan(heart.y, heart.task, eval_cfg("holdout"), [0, 1])
    row = members[0].test[0]
    changed = heart.features.copy()
    changed.loc[row, "thal"] = "unseen"
    other = replace(heart, features=changed, categories={**heart.categories,
                                                         "thal": [*heart.categories["thal"], "unseen"]})
    before, after = preprocess(heart, members), preprocess(other, members)
    assert after.X.shape[1] == before.X.shape[1] + 1 and not after.used[:, -1].any()
    first = population_runner(cfg, before, members)([0, 1])
    second = population_runner(cfg, after, members)([0, 1])
    d, hidden = before.X.shape[1], cfg.model.hidden[0]
    kernel_after = second.best[:, : (d + 1) * hidden].view(2, d + 1, hidden)
    assert torch.equal(kernel_after[:, -1], torch.zeros(2, hidden))  # the unseen column's weights stay 0
    torch.testing.assert_close(kernel_after[:, :-1].reshape(2, -1), first.best[:, : d * hidden], atol=1e-6, rtol=0)
    torch.testing.assert_close(second.best[:, (d + 1) * hidden :], first.best[:, d * hidden :], atol=1e-6, rtol=0)
