"""Optimization and regularization switches act on each member exactly as on a model alone."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runner.config.schema import GradClipConfig, LossConfig, ModelConfig, Norm, OptimConfig, OptimName, RegConfig, SchedConfig, SchedName
from runner.engine.loop import _clip
from runner.engine.losses import Criterion, Penalty
from runner.engine.optim import StackedOptimizer
from runner.engine.schedules import Schedule
from runner.models import build_model


def _steps(cfg, grads, p0):
    p = torch.nn.Parameter(p0.clone())
    opt = StackedOptimizer(p, cfg)
    for g in grads:
        p.grad = g.clone()
        opt.step(torch.ones(p.shape[0], dtype=torch.bool))
    return p.detach(), opt


def test_adamw_decay_leaves_adam_moments_unchanged():
    torch.manual_seed(0)
    p0, grads = torch.randn(2, 30, dtype=torch.float64), [torch.randn(2, 30, dtype=torch.float64) for _ in range(5)]
    adam_p, adam = _steps(OptimConfig(name=OptimName.adam, lr=0.01), grads, p0)
    adamw_p, adamw = _steps(OptimConfig(name=OptimName.adamw, lr=0.01, weight_decay=0.1), grads, p0)
    assert torch.equal(adam.m, adamw.m) and torch.equal(adam.v, adamw.v)
    assert not torch.allclose(adam_p, adamw_p)  # ... while the weights did decay


def test_sgd_with_l2_penalty_equals_sgd_with_weight_decay():
    torch.manual_seed(1)
    p0, g = torch.randn(3, 20, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    decayed, _ = _steps(OptimConfig(name=OptimName.sgd, lr=0.1, weight_decay=0.05), [g], p0)
    p = p0.clone().requires_grad_(True)
    Penalty(RegConfig(l2=0.05), torch.ones(20, dtype=torch.float64))(p).sum().backward()
    penalized, _ = _steps(OptimConfig(name=OptimName.sgd, lr=0.1), [g + p.grad], p0)
    torch.testing.assert_close(decayed, penalized, atol=1e-6, rtol=0)


def test_l2_and_l1_penalties_leave_biases_untouched():
    model = build_model(ModelConfig(hidden=[4], norm=Norm.layer), 2, 3, 1)
    model.initialize([0, 1], "default")
    Penalty(RegConfig(l2=0.1, l1=0.01), model.kernel_mask())(model.flat).sum().backward()
    for name, slot in model.slots.items():
        grad, w = model.flat.grad[:, slot.offset: slot.offset + slot.size], model.flat[:, slot.offset: slot.offset + slot.size]
        if slot.kernel:
            torch.testing.assert_close(grad, 0.1 * w.detach() + 0.01 * w.detach().sign())
        else:
            assert not grad.any(), name


@pytest.mark.parametrize("clip", [GradClipConfig(norm=1.0), GradClipConfig(value=0.05), GradClipConfig(norm=0.5, value=0.1)])
def test_clipping_is_per_member(clip):
    torch.manual_seed(2)
    grad = torch.randn(4, 50) * torch.tensor([[0.01], [1.0], [10.0], [0.1]])
    stacked = grad.clone()
    _clip(stacked, clip)
    for e in range(4):
        alone = torch.nn.Parameter(torch.zeros(50))
        alone.grad = grad[e].clone()
        if clip.value is not None:
            torch.nn.utils.clip_grad_value_([alone], clip.value)
        if clip.norm is not None:
            torch.nn.utils.clip_grad_norm_([alone], clip.norm)
        torch.testing.assert_close(stacked[e], alone.grad)


def test_dropout_keeps_expected_activation_and_is_identity_in_eval():
    cfg = ModelConfig(hidden=[8], dropout=0.5)
    model = build_model(cfg, 2, 3, 1)
    model.initialize([5, 6], "default")
    with torch.no_grad():
        model.flat[1] = model.flat[0]  # two identical networks with their own random streams
    x = torch.randn(1, 3).expand(2, 20000, 3)
    model.eval()
    reference = model(x)
    plain = build_model(ModelConfig(hidden=[8]), 2, 3, 1)
    plain.initialize([5, 6], "default")
    with torch.no_grad():
        plain.flat[1] = plain.flat[0]
    torch.testing.assert_close(reference, plain.eval()(x))
    model.train()
    noisy = model(x)
    assert not torch.equal(noisy[0], noisy[1])  # masks differ per member ...
    assert noisy[0].std() > 0  # ... and per example
    torch.testing.assert_close(noisy.mean(1), reference.mean(1), atol=0.02, rtol=0.02)


def test_label_smoothing_targets_and_zero_alpha():
    torch.manual_seed(3)
    out, y = torch.randn(2, 7, 4), torch.randint(0, 4, (2, 7)).float()
    alpha = 0.1
    smooth = F.one_hot(y.long(), 4) * (1 - alpha) + alpha / 4
    torch.testing.assert_close(smooth.sum(-1), torch.ones(2, 7))
    expected = -(smooth * out.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(Criterion("ce", LossConfig(label_smoothing=alpha), "cpu")(out, y), expected)
    plain = F.cross_entropy(out.reshape(-1, 4), y.reshape(-1).long(), reduction="none").view(2, 7)
    torch.testing.assert_close(Criterion("ce", LossConfig(), "cpu")(out, y), plain)
    # binary: the two-class form y(1-a) + a/2
    logit, t = torch.randn(1, 5, 1), torch.tensor([[0.0, 1, 1, 0, 1]])
    p = torch.sigmoid(logit.squeeze(-1))
    q = t * (1 - alpha) + alpha / 2
    torch.testing.assert_close(Criterion("bce", LossConfig(label_smoothing=alpha), "cpu")(logit, t),
                               -(q * p.log() + (1 - q) * (1 - p).log()))


def test_plateau_lowers_one_members_lr_only():
    sched = Schedule(SchedConfig(name=SchedName.plateau, patience=2, factor=0.5), 0.1, 50, 2, "cpu")
    lr = torch.full((2,), 0.1)
    active = torch.ones(2, dtype=torch.bool)
    for epoch in range(6):
        value = torch.tensor([1.0, 1.0 - 0.1 * epoch])  # member 0 flat, member 1 improving
        lr = sched.plateau(lr, value, True, active)
    assert lr[0].item() == pytest.approx(0.05)
    assert lr[1].item() == pytest.approx(0.1)


def _torch_curve(make, epochs, base=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    curve = []
    for _ in range(epochs):
        curve.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return curve


@pytest.mark.parametrize("cfg,make", [
    (SchedConfig(name=SchedName.constant), lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
    (SchedConfig(name=SchedName.step, step_size=7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    (SchedConfig(name=SchedName.exponential, gamma=0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    (SchedConfig(name=SchedName.cosine, eta_min=0.001),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=40, eta_min=0.001)),
    (SchedConfig(name=SchedName.warmup_cosine, warmup_epochs=5, eta_min=0.0),
     lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
         torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 5, total_iters=5),
         torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=35)], milestones=[5])),
    (SchedConfig(name=SchedName.onecycle, max_lr=0.5),
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=40, cycle_momentum=False)),
])
def test_schedule_matches_torch(cfg, make):
    ours = [Schedule(cfg, 0.1, 40, 1, "cpu").lr(e) for e in range(40)]
    np.testing.assert_allclose(ours, _torch_curve(make, 40), rtol=1e-6, atol=1e-9)


def test_warmup_in_steps_is_torchs_linear_warmup_per_step_counted_by_each_member():
    """sched.warmup_steps=N: a member's k-th step takes (k+1)/N of its rate, as torch's LinearLR(start_factor=1/N,
    total_iters=N-1) stepped every batch (nanoGPT's warmup), on top of the epoch's schedule; a member that sits a
    step out (no rows left this epoch) does not count it."""
    N, steps, epochs = 7, 3, 5
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / N, total_iters=N - 1)
    factors = []
    for _ in range(epochs * steps):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        ramp.step()
    sched = Schedule(SchedConfig(name=SchedName.cosine, warmup_steps=N), 0.1, epochs, 2, "cpu")
    taken = 0  # member 1 steps only on the first two steps of each epoch
    for epoch in range(epochs):
        rates = sched.rates(epoch)
        for s in range(steps):
            stepping = torch.tensor([True, s < 2])
            got = sched.warmed(rates, stepping)
            k = epoch * steps + s
            assert got[0].item() == pytest.approx(sched.lr(epoch) * factors[k], rel=1e-6)
            assert got[1].item() == pytest.approx(sched.lr(epoch) * factors[taken], rel=1e-6)
            taken += s < 2
    assert Schedule(SchedConfig(), 0.1, 3, 2, "cpu").warmed(torch.ones(2), torch.ones(2, dtype=torch.bool)) is None


def test_plateau_matches_torch_for_one_member():
    values = [1.0, 0.9, 0.9, 0.95, 0.91, 0.92, 0.93, 0.8, 0.81, 0.85, 0.9, 0.99, 1.0, 0.7]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=1e-4)
    sched = Schedule(SchedConfig(name=SchedName.plateau, factor=0.5, patience=2), 0.1, 50, 1, "cpu")
    lr = torch.full((1,), 0.1, dtype=torch.float64)
    for v in values:
        ref.step(v)
        lr = sched.plateau(lr, torch.tensor([v], dtype=torch.float64), True, torch.ones(1, dtype=torch.bool))
        assert lr.item() == pytest.approx(opt.param_groups[0]["lr"])


def test_batch_norm_statistics_are_per_member():
    torch.manual_seed(4)
    model = build_model(ModelConfig(hidden=[5], norm=Norm.batch), 3, 4, 1)
    model.initialize([0, 1, 2], "default")
    x = torch.randn(3, 16, 4)
    model.train()
    model(x)
    for e in range(3):
        assert "dense0.bias" not in model.slots  # batch norm makes a bias before it redundant
        h = x[e] @ model.view("dense0.weight")[e]
        bn = torch.nn.BatchNorm1d(5)
        bn.train()
        expected = bn(h.detach())
        ours = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
        torch.testing.assert_close(ours, expected.detach(), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.stat("norm0.mean")[e, 0], bn.running_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.stat("norm0.var")[e, 0], bn.running_var, atol=1e-6, rtol=0)


def _stopper(**kw):
    from runner.config.schema import EarlyStoppingConfig
    from runner.engine.early_stopping import EarlyStopping

    model = build_model(ModelConfig(hidden=[2]), 1, 2, 1)
    return EarlyStopping(model, EarlyStoppingConfig(**kw))


def _feed(stopper, values):
    for epoch, v in enumerate(values):
        stopper.update(epoch, torch.tensor([v]), stopper.active)
        stopper.count(torch.ones(1, dtype=torch.bool))


def test_early_stopping_start_from_epoch_ignores_early_epochs():
    stopper = _stopper(patience=2, start_from_epoch=3)
    _feed(stopper, [0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8])
    assert stopper.best_epoch.item() == 3  # epoch 0's 0.1 was before monitoring began
    assert not stopper.active.item()


def test_early_stopping_baseline_must_be_beaten():
    stopper = _stopper(patience=3, baseline=0.5)
    _feed(stopper, [0.6, 0.55, 0.52, 0.51])
    assert stopper.best_epoch.item() == -1 and not stopper.active.item()


def test_early_stopping_relative_min_delta():
    stopper = _stopper(patience=10, min_delta=0.1, min_delta_mode="rel")
    _feed(stopper, [1.0, 0.95, 0.85, 0.8])  # 0.95 is not 10% below 1.0; 0.85 is
    assert stopper.best_epoch.item() == 2


def test_pos_weight_matches_torch():
    out, y = torch.randn(2, 9, 1), torch.randint(0, 2, (2, 9)).float()
    ours = Criterion("bce", LossConfig(pos_weight=3.0), "cpu")(out, y)
    ref = F.binary_cross_entropy_with_logits(out.squeeze(-1), y, pos_weight=torch.tensor(3.0), reduction="none")
    torch.testing.assert_close(ours, ref)


def test_row_weights_give_the_weighted_mean_loss_step():
    from runner.config.schema import Config, EarlyStoppingConfig, TrainerConfig
    from runner.engine.inputs import MemberInputs
    from runner.engine.loop import fit
    from runner.engine.rows import PopulationData

    torch.manual_seed(6)
    X, y = torch.randn(20, 3), torch.randint(0, 2, (20,)).float()
    w = torch.where(y == 1, 3.0, 1.0)  # class weights [1, 3]
    cfg = Config(optim=OptimConfig(name=OptimName.sgd, lr=0.5), trainer=TrainerConfig(
        epochs=1, batch_size="full", early_stopping=EarlyStoppingConfig(patience=None, restore_best=False)))
    model = build_model(ModelConfig(hidden=[4]), 1, 3, 1)
    model.initialize([0], "default")
    start = model.flat.detach().clone()
    data = PopulationData(MemberInputs.identity(X, y, 1, weight=w), [np.arange(20)], [np.arange(0)], [0])
    result = fit(model, data, cfg, "bce")
    ref = build_model(ModelConfig(hidden=[4]), 1, 3, 1)
    with torch.no_grad():
        ref.flat.copy_(start)
    loss = F.binary_cross_entropy_with_logits(ref(X[None]).squeeze(-1), y[None], weight=w, reduction="sum") / w.sum()
    loss.backward()
    torch.testing.assert_close(result.last, start - 0.5 * ref.flat.grad, atol=1e-6, rtol=0)
