"""The engine on any device: no host round-trips per step, data on the device once, mixed precision, checkpoints
that load anywhere."""

import ast
import collections
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fit_population, ragged_rows
from runner.config.schema import (
    AugConfig,
    AvgConfig,
    AvgName,
    Config,
    EarlyStoppingConfig,
    GradClipConfig,
    ModelConfig,
    Norm,
    OptimConfig,
    OptimName,
    Precision,
    RegConfig,
    SchedConfig,
    SchedName,
    TrainerConfig,
)
from runner.engine import inputs as inputs_module
from runner.engine.inputs import MemberInputs
from runner.engine.loop import fit
from runner.engine.rows import PopulationData
from runner.errors import RunnerError
from runner.models import build_model

# Each of these copies a device value to the host and waits for the device to get there.
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@pytest.fixture
def host_reads(monkeypatch):
    """A counter of Tensor -> host reads, by method, while the test runs."""
    counts = collections.Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def _tables(n=64, d=5, seed=0):
    g = np.random.default_rng(seed)
    X = torch.from_numpy(g.normal(size=(n, d)).astype(np.float32))
    y = torch.from_numpy((g.random(n) > 0.5).astype(np.float32))
    return X, y


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) * 255).to(torch.uint8), torch.randint(0, 3, (n,), generator=g).float()


def _fit(X, y, cfg: Config, loss: str, outputs: int, E=3, train_rows=48, member_cfgs=None):
    """One fit of E members on their own `train_rows` training rows (ragged: member e has e fewer)."""
    shape = (E, *X.shape[1:])
    return fit_population(cfg, X, y, ragged_rows(len(y), E, train_rows, seed=1, val=10), list(range(E)), loss, outputs,
                          shift=torch.full(shape, 0.5), scale=torch.full(shape, 2.0), member_cfgs=member_cfgs)


def _cfg(batch, model=None, **sections):
    cfg = Config(optim=OptimConfig(name=OptimName.adam, lr=0.01), model=model or ModelConfig(hidden=[8]),
                 trainer=TrainerConfig(epochs=1, batch_size=batch, early_stopping=EarlyStoppingConfig(patience=None)))
    for name, value in sections.items():
        setattr(cfg, name, value)
    return cfg


SETUPS = {
    "adam": dict(),
    "sgd": dict(optim=OptimConfig(name=OptimName.sgd, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "rmsprop": dict(optim=OptimConfig(name=OptimName.rmsprop, lr=0.01, momentum=0.5)),
    "adagrad": dict(optim=OptimConfig(name=OptimName.adagrad, lr=0.01)),
    "batch norm, dropout, penalties, clipping, averages": dict(
        model=ModelConfig(hidden=[8], norm=Norm.batch, dropout=0.2), reg=RegConfig(l1=1e-3, l2=1e-3),
        avg=AvgConfig(name=AvgName.compare, start_epoch=0)),
    "table augmentation": dict(aug=AugConfig(noise=0.1, mixup=0.4)),
    "plateau": dict(sched=SchedConfig(name=SchedName.plateau)),
    "mixture of experts": dict(model=ModelConfig(name="moe", experts=2, expert=[4])),
    "each member its own lr (fused groups)": dict(),
    "16-mixed": dict(),
}


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("per_step_gather", [False, True])
def test_no_host_reads_per_step(setup, per_step_gather, host_reads, monkeypatch):
    """An epoch of 16 steps reads from the device exactly as often as one of 4: never inside the step."""
    if per_step_gather:  # data too large for one gather per epoch: each step gathers its own rows
        monkeypatch.setattr(inputs_module, "CHUNK_ELEMENTS", 8)
        monkeypatch.setattr("runner.engine.rows.CHUNK_ELEMENTS", 8)
    X, y = _tables()
    counts = []
    for batch in (12, 3):  # 48 training rows: 4 and 16 steps
        cfg = _cfg(batch, **SETUPS[setup])
        if setup.startswith("batch norm"):
            cfg.trainer.grad_clip = GradClipConfig(norm=1.0, value=5.0)
        if setup == "16-mixed":
            cfg.trainer.precision = Precision["16-mixed"]
        own = None
        if setup.startswith("each member"):
            own = [copy.deepcopy(cfg) for _ in range(3)]
            for e, c in enumerate(own):
                c.optim.lr = 0.01 * (1 + e % 2)
        host_reads.clear()
        _fit(X, y, cfg, "bce", 1, member_cfgs=own)
        counts.append(dict(host_reads))
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) < 100  # a few per epoch, not per row


@pytest.mark.parametrize("aug", [AugConfig(shift=1, flip=True, rotate=10, noise=0.1, mixup=0.4, cutmix=1.0),
                                 AugConfig(cutmix=1.0)])
def test_no_host_reads_per_step_cnn_with_image_augmentation(aug, host_reads):
    X, y = _images()
    counts = []
    for batch in (12, 3):
        cfg = _cfg(batch, model=ModelConfig(name="cnn", channels=[4, 8], norm=Norm.batch), aug=aug)
        host_reads.clear()
        _fit(X, y, cfg, "ce", 3)
        counts.append(dict(host_reads))
    assert counts[0] == counts[1]


def test_no_host_copies_per_step(monkeypatch):
    """Rows, masks and per-member arrays reach the device once per epoch at most: the step makes no tensor from
    host data (0-dim tensors aside: CUDA takes a CPU scalar as a kernel argument, without a copy)."""
    counts = collections.Counter()
    for name in ("from_numpy", "as_tensor", "tensor"):
        original = getattr(torch, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            counts[_name] += out.dim() > 0
            return out

        monkeypatch.setattr(torch, name, counted)
    X, y = _tables()
    seen = []
    for batch in (12, 3):
        counts.clear()
        _fit(X, y, _cfg(batch, aug=AugConfig(noise=0.1, mixup=0.4)), "bce", 1)
        seen.append(dict(counts))
    assert seen[0] == seen[1]


def _precision_fit(precision, E=3, epochs=8, **kwargs):
    X, y = _tables(n=96, d=6)
    cfg = _cfg(8, **kwargs)
    cfg.trainer.epochs, cfg.trainer.precision = epochs, Precision[precision]
    return _fit(X, y, cfg, "bce", 1, E=E, train_rows=64)


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_reduced_precision_trains_close_to_float32_with_float32_weights(precision):
    full, reduced = _precision_fit("32"), _precision_fit(precision)
    assert reduced.last.dtype == torch.float32 and reduced.best.dtype == torch.float32
    a, b = full.history["train/loss"], reduced.history["train/loss"]
    assert np.isfinite(b).all() and b[-1].mean() < b[0].mean()  # it learns
    np.testing.assert_allclose(b, a, rtol=0.05)  # close to float32's curve ...
    assert not np.array_equal(a, b)  # ... and not float32 itself: autocast was on
    assert (reduced.last - full.last).abs().max() < 0.05


def test_bf16_autocast_runs_the_forward_pass_in_bfloat16(monkeypatch):
    """Training's dense layers run as bfloat16 matmuls, validation's as float32; weights, gradients and the
    optimizer's moments stay float32."""
    from runner.engine import optim

    dtypes, moments = set(), []
    original_step = optim.StackedOptimizer.step

    def step(self, *args, **kwargs):
        moments.append((self.m.dtype, self.v.dtype, self.flat.dtype, self.flat.grad.dtype))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(optim.StackedOptimizer, "step", step)
    real_baddbmm, real_bmm = torch.baddbmm, torch.bmm
    monkeypatch.setattr(torch, "baddbmm", lambda *a, **k: _record(dtypes, real_baddbmm(*a, **k)))
    monkeypatch.setattr(torch, "bmm", lambda *a, **k: _record(dtypes, real_bmm(*a, **k)))
    _precision_fit("bf16", epochs=1)
    assert dtypes == {(True, torch.bfloat16), (False, torch.float32)}
    assert set(moments) == {(torch.float32,) * 4}


def _record(seen: set, out: torch.Tensor) -> torch.Tensor:
    seen.add((torch.is_autocast_enabled("cpu"), out.dtype))
    return out


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_reduced_precision_stacked_equals_alone(precision):
    """Autocast and loss scaling are per member: a member trains the same beside others as alone."""
    stacked = _precision_fit(precision, E=3, epochs=4)
    X, y = _tables(n=96, d=6)
    rows = ragged_rows(96, 3, 64, seed=1, val=10)  # _precision_fit's
    cfg = _cfg(8)
    cfg.trainer.epochs, cfg.trainer.precision = 4, Precision[precision]
    for e in range(3):
        alone = fit_population(cfg, X, y, [rows[e]], [e], shift=torch.full((1, 6), 0.5), scale=torch.full((1, 6), 2.0))
        torch.testing.assert_close(stacked.last[e], alone.last[0], atol=1e-5, rtol=0)


def test_loss_scale_per_member(monkeypatch):
    """GradScaler's rule, member by member: an overflow halves that member's scale and skips its step; enough
    finite steps in a row double it."""
    from runner.engine import precision as precision_module

    monkeypatch.setattr(precision_module, "GROWTH_INTERVAL", 2)
    p = precision_module.MixedPrecision("16-mixed", torch.device("cpu"), 3)
    grad = torch.ones(3, 4) * p.scale.unsqueeze(1)
    grad[0, 1] = float("inf")
    finite = p.unscale(grad)
    assert finite.tolist() == [False, True, True]
    torch.testing.assert_close(grad[1:], torch.ones(2, 4))
    stepping = torch.tensor([True, True, False])  # member 2 sat this step out: its count stays
    p.update(finite, stepping)
    assert p.scale.tolist() == [2.0**15, 2.0**16, 2.0**16] and p.good_steps.tolist() == [0, 1, 0]
    p.update(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool))
    assert p.scale.tolist() == [2.0**15, 2.0**17, 2.0**16] and p.good_steps.tolist() == [1, 0, 1]


@pytest.mark.parametrize("name", [OptimName.adam, OptimName.sgd])
def test_overflowing_member_keeps_its_weights_and_moments(name):
    from runner.engine.optim import StackedOptimizer

    flat = torch.nn.Parameter(torch.arange(12, dtype=torch.float32).view(3, 4))
    flat.grad = torch.ones(3, 4)
    opt = StackedOptimizer(flat, OptimConfig(name=name, lr=0.1, momentum=0.9 if name == OptimName.sgd else 0.0))
    for _ in range(2):
        opt.step(torch.ones(3, dtype=torch.bool), None, torch.tensor([True, False, True]))
    torch.testing.assert_close(flat.data[1], torch.arange(4, 8, dtype=torch.float32))
    assert opt.steps.tolist() == [2, 0, 2] and opt.m[1].abs().sum() == 0
    assert (flat.data[0] < torch.arange(4)).all()


def test_precision_choices_from_yaml_and_the_command_line(compose, train):
    assert compose().trainer.precision == Precision["32"]  # conf/trainer/default.yaml
    assert compose(["trainer.precision=32"]).trainer.precision == Precision["32"]  # an int on the command line
    assert compose(["trainer.precision=bf16"]).trainer.precision == Precision["bf16"]
    status, _, err = train("trainer.precision=64")
    assert status == 2
    assert err.strip() == "error: trainer.precision: Invalid value '64', expected one of [32, bf16, 16-mixed]"


def test_precision_without_autocast_is_refused(monkeypatch):
    from runner.engine.precision import MixedPrecision

    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(RunnerError, match="trainer.precision=bf16 has no autocast on cpu; use trainer.precision=32"):
        MixedPrecision("bf16", torch.device("cpu"), 2)


def test_an_overflowing_step_is_skipped(monkeypatch):
    """16-mixed with a loss scale far too large: every float16 gradient of the first epoch overflows, so no member
    steps and the weights stay as initialized (float32 moves them); the scale comes down step by step."""
    from runner.engine import precision as precision_module

    monkeypatch.setattr(precision_module, "INITIAL_SCALE", 2.0**40)
    X, y = _tables(n=96, d=6)
    for name, moved in (("16-mixed", False), ("32", True)):
        cfg = _cfg(8)
        cfg.trainer.precision = Precision[name]
        model = build_model(cfg.model, 2, 6, 1)
        model.initialize([0, 1], "default")
        initial = model.flat.detach().clone()
        inputs = MemberInputs(X, y, torch.zeros(2, 6), torch.ones(2, 6))
        result = fit(model, PopulationData(inputs, [np.arange(64)] * 2, [np.arange(64, 96)] * 2, [0, 1]), cfg, "bce")
        assert bool((result.last != initial).any()) == moved


def test_every_torch_load_reads_onto_a_chosen_device():
    """A file saved from a GPU loads on a CPU-only machine only where torch.load is told where to put it."""
    src = Path(__file__).resolve().parents[1] / "src"
    calls = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls.append((path.name, {k.arg for k in node.keywords}))
    assert len(calls) >= 2  # the run's checkpoints (predict) and the fit state (resume)
    assert all({"map_location", "weights_only"} <= keys for _, keys in calls), calls


def test_loaded_state_goes_to_the_device_of_the_state_it_replaces():
    """Resume reads the fit state on the CPU; each tensor then moves to where the fit keeps it (the 'meta' device
    stands in for a GPU here), and host-side state stays on the host."""
    from runner.engine.state import MemberState

    class Kept(MemberState):
        per_member, fields = ("moments",), ("host",)

    kept = Kept()
    kept.moments, kept.host = torch.zeros(2, 3, device="meta"), torch.zeros(2, dtype=torch.float64)
    kept.load_state_dict({"moments": torch.ones(2, 3), "host": torch.ones(2, dtype=torch.float64)})
    assert kept.moments.device.type == "meta" and kept.moments.shape == (2, 3)
    assert kept.host.device.type == "cpu" and kept.host.tolist() == [1.0, 1.0]


def test_checkpoint_round_trip(tmp_path):
    """save_checkpoint writes host tensors; torch.load(map_location='cpu', weights_only=True) gives them back."""
    from runner.engine.checkpoint import save_checkpoint

    model = build_model(ModelConfig(hidden=[4]), 2, 3, 1)
    model.initialize([0, 1], "default")
    save_checkpoint(tmp_path / "best.pt", model.flat, model.stats, model, [{"seed": 0}, {"seed": 1}], {"loss": "bce"},
                    {"shift": np.arange(6.0).reshape(2, 3)})
    state = torch.load(tmp_path / "best.pt", weights_only=True, map_location="cpu")
    torch.testing.assert_close(state["flat"], model.flat.detach())
    assert state["flat"].device.type == "cpu" and state["preprocessing"]["shift"].tolist()[1] == [3.0, 4.0, 5.0]
    assert state["slots"].keys() == model.slots.keys() and state["members"][1] == {"seed": 1}


def test_16_mixed_interrupted_then_resumed_equals_unbroken(tmp_path, monkeypatch):
    """Each member's loss scale is fit state: saved with the rest, so a resumed 16-mixed fit equals an unbroken one
    (the scale starts too high here, so overflows and skipped steps happen on both sides of the stop)."""
    import signal

    from runner.engine import precision as precision_module
    from runner.engine.resume import FitCheckpoint
    from runner.errors import Interrupted

    monkeypatch.setattr(precision_module, "INITIAL_SCALE", 2.0**30)
    monkeypatch.setattr(precision_module, "GROWTH_INTERVAL", 5)
    X, y = _tables(n=96, d=6)

    def run(checkpoint=None, on_epoch=None):
        cfg = _cfg(8)
        cfg.trainer.epochs, cfg.trainer.precision = 6, Precision["16-mixed"]
        model = build_model(cfg.model, 2, 6, 1)
        model.initialize([0, 1], "default")
        inputs = MemberInputs(X, y, torch.zeros(2, 6), torch.ones(2, 6))
        data = PopulationData(inputs, [np.arange(64), np.arange(8, 64)], [np.arange(64, 96)] * 2, [0, 1])
        return fit(model, data, cfg, "bce", on_epoch, checkpoint=checkpoint)

    unbroken = run()
    checkpoint = FitCheckpoint(tmp_path / "fit_state.pt", every=1)

    def stop(epoch, active):
        if epoch == 2:
            checkpoint.signal = signal.SIGTERM

    with pytest.raises(Interrupted):
        run(checkpoint, stop)
    assert "precision" in torch.load(checkpoint.path, weights_only=True, map_location="cpu")["states"]
    resumed = run(FitCheckpoint(tmp_path / "fit_state.pt", resume=True))
    assert torch.equal(resumed.last, unbroken.last) and torch.equal(resumed.best, unbroken.best)
    np.testing.assert_array_equal(resumed.history["train/loss"], unbroken.history["train/loss"])
