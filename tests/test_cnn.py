"""The stacked CNN and augmentation: equal to torch's own layers per member, mixup/cutmix targets, and nothing but
training rows is ever augmented (stacked equals alone with every switch on: test_contract.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import fit_population
from runner.config.schema import AugConfig, Config, EarlyStoppingConfig, ModelConfig, Norm, OptimConfig, OptimName
from runner.engine.augment import Augmenter
from runner.models import build_model
from runner.models.noise import MemberNoise


def test_lecture_cnn_has_5910_parameters_on_digits():
    model = build_model(ModelConfig(name="cnn", channels=[6, 16, 32]), 2, (1, 8, 8), 10)
    # 3x3 convs 1->6->16->32 with biases (no norm layer), then a 32 -> 10 head
    assert model.parameters_per_member() == (6 * 9 + 6) + (16 * 6 * 9 + 16) + (32 * 16 * 9 + 32) + (32 * 10 + 10)


def _reference(model, e, norm):
    """Member e of `model` as ordinary torch modules (Conv2d, BatchNorm2d/GroupNorm, ReLU, MaxPool2d)."""
    layers = []
    for i in range(model.blocks):
        w = model.view(f"conv{i}.weight")[e].detach()
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2, bias=norm == "none")
        conv.weight.data.copy_(w)
        if norm == "none":
            conv.bias.data.copy_(model.view(f"conv{i}.bias")[e].detach())
        layers.append(conv)
        if norm != "none":
            layer = nn.BatchNorm2d(w.shape[0]) if norm == "batch" else nn.GroupNorm(model.groups, w.shape[0])
            layer.weight.data.copy_(model.view(f"norm{i}.weight")[e].detach())
            layer.bias.data.copy_(model.view(f"norm{i}.bias")[e].detach())
            layers.append(layer)
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
def test_each_member_equals_torch_layers(norm):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn", channels=[4, 8], norm=Norm(norm)), 3, (2, 8, 8), 5)
    model.initialize([0, 1, 2], "he")
    x = torch.randn(3, 6, 2, 8, 8)
    model.train()
    out = model(x)
    for e in range(3):
        ref = _reference(model, e, norm).train()
        features = ref(x[e]).mean((-2, -1))
        want = features @ model.view("head.weight")[e] + model.view("head.bias")[e]
        torch.testing.assert_close(out[e], want, atol=1e-5, rtol=1e-4)
        if norm == "batch":
            bn = ref[1]
            torch.testing.assert_close(model.stat("norm0.mean")[e, 0], bn.running_mean, atol=1e-6, rtol=0)
            torch.testing.assert_close(model.stat("norm0.var")[e, 0], bn.running_var, atol=1e-6, rtol=1e-5)


def _images(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(n, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 3, (n,), generator=g).float()
    return X, y


def _fit(X, y, rows, seeds, aug: AugConfig, model_cfg: ModelConfig, epochs=3, lr=0.01):
    cfg = Config(model=model_cfg, optim=OptimConfig(name=OptimName.adam, lr=lr), aug=aug)
    cfg.trainer.epochs, cfg.trainer.batch_size = epochs, 16
    cfg.trainer.early_stopping = EarlyStoppingConfig(patience=2)
    # Per-member standardization, as image preprocessing gives (members differ in mean and sd).
    shift = torch.tensor([100.0 + 10 * s for s in seeds]).view(len(seeds), 1, 1, 1)
    scale = torch.tensor([60.0 + s for s in seeds]).view(len(seeds), 1, 1, 1)
    return fit_population(cfg, X, y, rows, seeds, "ce", outputs=3, shift=shift, scale=scale)


EVERYTHING = AugConfig(shift=1, flip=True, rotate=15, noise=0.1, mixup=0.4, cutmix=1.0)


def _augmenter(aug, seeds=(3, 4), B=8, steps=1):
    out = Augmenter(aug, list(seeds), (1, 6, 6), 3, "cpu")
    out.new_epoch(np.ones((steps, len(seeds), B), dtype=bool))
    return out


def test_mixup_targets_are_the_mixing_weight():
    aug = _augmenter(AugConfig(mixup=0.4))
    x = torch.arange(2 * 8, dtype=torch.float32).view(2, 8, 1, 1, 1).expand(2, 8, 1, 6, 6).contiguous()
    y = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1]] * 2).float()
    mixed, soft = aug(x, y, 0, MemberNoise([3, 4]))
    lam, partner = aug.draws["lam"][0, :, 0], aug.draws["partner"][0]
    assert sorted(partner[0].tolist()) == list(range(8))  # a permutation of the member's own batch rows
    for e in range(2):
        for b in range(8):
            p = int(partner[e, b])
            assert torch.allclose(mixed[e, b], lam[e] * x[e, b] + (1 - lam[e]) * x[e, p])
            want = lam[e] * F.one_hot(y[e, b].long(), 3) + (1 - lam[e]) * F.one_hot(y[e, p].long(), 3)
            torch.testing.assert_close(soft[e, b], want.float())
    assert soft.sum(-1).allclose(torch.ones(2, 8))


def test_cutmix_targets_are_the_patch_area():
    aug = _augmenter(AugConfig(cutmix=1.0), seeds=(3, 4, 5, 6))
    x = torch.arange(4 * 8, dtype=torch.float32).view(4, 8, 1, 1, 1).expand(4, 8, 1, 6, 6).contiguous()
    y = torch.zeros(4, 8)
    y[:, 1::2] = 1
    mixed, soft = aug(x, y, 0, MemberNoise([3, 4, 5, 6]))
    partner = aug.draws["partner"][0]
    for e in range(4):
        for b in range(8):
            p = int(partner[e, b])
            if p == b:
                continue
            pasted = (mixed[e, b] == x[e, p, 0, 0, 0]).float().mean()  # share of pixels from the partner
            own, other = int(y[e, b]), int(y[e, p])
            if own != other:
                torch.testing.assert_close(soft[e, b, other], pasted)
                torch.testing.assert_close(soft[e, b, own], 1 - pasted)


def test_shift_moves_whole_pixels_and_flip_mirrors():
    aug = _augmenter(AugConfig(shift=2, flip=True), B=16)
    x = torch.randn(2, 16, 1, 6, 6)
    out, _ = aug(x, torch.zeros(2, 16), 0, MemberNoise([3, 4]))
    theta = aug.draws["affine"][0]
    for e in range(2):
        for b in range(16):
            dx = round(float(theta[e, b, 0, 2]) * 3)  # 2·dx/W with W = 6
            dy = round(float(theta[e, b, 1, 2]) * 3)
            flipped = bool(theta[e, b, 0, 0] < 0)
            want = x[e, b, 0].flip(-1) if flipped else x[e, b, 0]
            dx = -dx if flipped else dx  # the grid reads input column W-1-j+dx: the mirror image moved by -dx
            padded = F.pad(want, (2, 2, 2, 2))
            torch.testing.assert_close(out[e, b, 0], padded[2 + dy : 8 + dy, 2 + dx : 8 + dx], atol=1e-5, rtol=0)


def test_validation_is_never_augmented(monkeypatch):
    """The augmenter runs once per training step and nowhere else; validation scores ignore it."""
    X, y = _images()
    rows = [(np.arange(40), np.arange(40, 60))]
    calls = []
    original = Augmenter.__call__
    monkeypatch.setattr(Augmenter, "__call__", lambda self, *a: calls.append(a[0].shape) or original(self, *a))
    cfg = ModelConfig(name="cnn", channels=[4])
    with_aug = _fit(X, y, rows, [0], EVERYTHING, cfg, epochs=2, lr=0.0)
    assert len(calls) == 2 * 3 and all(s[1] == 16 for s in calls)  # 2 epochs x 3 batches of 16 training rows
    without = _fit(X, y, rows, [0], AugConfig(), cfg, epochs=2, lr=0.0)
    np.testing.assert_array_equal(with_aug.history["val/loss"], without.history["val/loss"])
    assert not np.array_equal(with_aug.history["train/loss"], without.history["train/loss"])


def test_image_statistics_come_from_training_rows_only(eval_cfg):
    from runner.data.dataset import Dataset
    from runner.data.preprocess import preprocess
    from runner.data.splits import population_plan

    g = np.random.default_rng(1)
    images = g.integers(0, 256, (40, 3, 5, 5)).astype(np.uint8)
    y = np.repeat([0, 1], 20)
    ds = Dataset(name="pix", target="label", task="binary", features=None, y=y, classes=["0", "1"], images=images)
    members = population_plan(y, "binary", eval_cfg("kfold", k=4), [0])
    before = preprocess(ds, members)
    for e, m in enumerate(members):
        train = images[m.train].astype(np.float64)
        np.testing.assert_allclose(before.shift[e].ravel(), train.mean((0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(before.scale[e].ravel(), train.std((0, 2, 3)), rtol=1e-6)
    row = members[2].test[0]
    changed = images.copy()
    changed[row] = 255 - changed[row]
    after = preprocess(Dataset(**{**ds.__dict__, "images": changed}), members)
    for e, m in enumerate(members):
        same = row not in m.train
        assert np.array_equal(after.shift[e], before.shift[e]) == same
        assert np.array_equal(after.scale[e], before.scale[e]) == same


def test_generic_vmap_path_equals_the_stacked_cnn():
    """model=cnn_vmap (an ordinary nn.Module under vmap) computes what model=cnn computes with the same weights."""
    stacked = build_model(ModelConfig(name="cnn", channels=[4, 8]), 3, (2, 8, 8), 5)
    generic = build_model(ModelConfig(name="cnn_vmap", channels=[4, 8]), 3, (2, 8, 8), 5)
    stacked.initialize([0, 1, 2], "default")
    generic.initialize([0, 1, 2], "default")
    assert generic.parameters_per_member() == stacked.parameters_per_member()
    with torch.no_grad():
        for i, layer in enumerate(["features.0", "features.3"]):
            generic.view(f"{layer}.weight").copy_(stacked.view(f"conv{i}.weight"))
            generic.view(f"{layer}.bias").copy_(stacked.view(f"conv{i}.bias"))
        generic.view("head.weight").copy_(stacked.view("head.weight").transpose(1, 2))
        generic.view("head.bias").copy_(stacked.view("head.bias").squeeze(1))
    x = torch.randn(3, 7, 2, 8, 8)
    torch.testing.assert_close(generic.eval()(x), stacked.eval()(x), atol=1e-5, rtol=1e-5)


def test_cnn_vmap_with_batch_norm_is_refused_by_the_config_table():
    """Refused with the config's other checks, before torch builds anything: the generic path keeps no per-member
    batch statistics."""
    from runner.config.checks import validate
    from runner.errors import RunnerError

    validate(Config(model=ModelConfig(name="cnn_vmap", norm=Norm.group, channels=[4])))
    with pytest.raises(RunnerError, match=r"model.norm=batch is not valid: model=cnn_vmap supports"):
        validate(Config(model=ModelConfig(name="cnn_vmap", norm=Norm.batch)))
