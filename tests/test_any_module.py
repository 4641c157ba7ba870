"""Any nn.Module as a population, as PyTorch would train it alone: each member is the class built under its own
seed (its own initialization kept), frozen parameters stay frozen, a module vmap cannot run trains with its
members in turn, and every member equals a plain torch.optim loop written here."""

import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import assert_member_equals_alone, fit_population
from usernets import Sometimes  # a layer called every other step: Adam counts its steps apart
from runner.config.schema import Config, DecayOn, EarlyStoppingConfig, ModelConfig, OptimConfig, OptimName
from runner.engine.inputs import MemberInputs
from runner.engine.rows import PopulationData
from runner.errors import RunnerError
from runner.models import build_model
from runner.models.module import give
from runner.models.stacked import BUFFER

FEATURES, CLASSES = 5, 3


class Recurrent(nn.Module):
    """A row's features read as a sequence by an LSTM (torch draws its weights U(±1/√hidden))."""

    def __init__(self, input_shape, out_features, cell=nn.LSTM):
        super().__init__()
        self.rnn = cell(1, 6, batch_first=True)
        self.head = nn.Linear(6, out_features)

    def forward(self, x):
        out, _ = self.rnn(x.unsqueeze(-1))
        return self.head(out[:, -1])


class Gated(Recurrent):
    def __init__(self, input_shape, out_features):
        super().__init__(input_shape, out_features, nn.GRU)


class Tokens(nn.Module):
    """A CLS token, a constant-initialized scale, a 0-dim temperature and a Linear named `normalizer`."""

    def __init__(self, input_shape, out_features, d=8):
        super().__init__()
        self.embed = nn.Linear(1, d)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.scale = nn.Parameter(torch.full((d,), 0.5))
        self.temperature = nn.Parameter(torch.tensor(2.0))
        self.normalizer = nn.Linear(d, d)
        self.head = nn.Linear(d, out_features)

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.embed(x.unsqueeze(-1))], 1)
        return self.head(torch.relu(self.normalizer(tokens * self.scale)).mean(1) / self.temperature)


class Branchy(nn.Module):
    """A forward that branches on its values (vmap refuses it; PyTorch alone runs it)."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a, self.b = nn.Linear(input_shape[0], 8), nn.Linear(8, out_features)

    def forward(self, x):
        h = self.a(x)
        if h.mean() > 0:
            h = torch.relu(h)
        return self.b(torch.tanh(h))


class Frozen(nn.Module):
    """Its first layer frozen, as a user fine-tuning a head would."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.body = nn.Linear(input_shape[0], 8)
        self.body.requires_grad_(False)
        self.head = nn.Linear(8, out_features)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class Leftover(nn.Module):
    """A layer built but never called (an auxiliary head, code left behind): torch.optim leaves it as built."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.body, self.head = nn.Linear(input_shape[0], 8), nn.Linear(8, out_features)
        self.aux = nn.Linear(8, out_features)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class BranchyLeftover(Branchy):
    """A forward that branches on its values (members in turn) and a layer it never calls."""

    def __init__(self, input_shape, out_features):
        super().__init__(input_shape, out_features)
        self.aux = nn.Linear(8, out_features)


class Fourier(nn.Module):
    """Random Fourier features: a projection drawn in __init__ and kept as a buffer (each member its own draw)."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.register_buffer("projection", torch.randn(input_shape[0], 16))
        self.head = nn.Linear(32, out_features)

    def forward(self, x):
        z = x @ self.projection
        return self.head(torch.cat([torch.cos(z), torch.sin(z)], -1))


class Counter(nn.Module):
    """State its forward updates in training: a float and an integer buffer (steps taken), read by the output."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.head = nn.Linear(input_shape[0], out_features)
        self.register_buffer("seen", torch.zeros(()))
        self.register_buffer("steps", torch.zeros(2, dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.seen += 0.5
            self.steps += torch.tensor([1, 2])
        return self.head(x) * (1 + 0.01 * self.steps[0]) + 0.001 * self.seen


class OwnNorm(nn.Module):
    """A normalization written by hand over the batch's rows: a member's padding rows would move its statistics."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a, self.head = nn.Linear(input_shape[0], 8), nn.Linear(8, out_features)

    def forward(self, x):
        h = self.a(x)
        return self.head(torch.relu((h - h.mean(0)) / (h.std(0) + 1e-5)))


class Jitter(nn.Module):
    """Gaussian noise of its own on a hidden layer in training (torch.randn_like)."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a, self.head = nn.Linear(input_shape[0], 8), nn.Linear(8, out_features)

    def forward(self, x):
        h = self.a(x)
        return self.head(torch.relu(h + 0.1 * torch.randn_like(h) if self.training else h))


def test_a_module_drawing_random_numbers_leaves_the_callers_generators_as_they_were():
    from runner.config.schema import Config

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, FEATURES, generator=g), torch.randint(0, CLASSES, (40,), generator=g).float()
    cfg = Config(model=ModelConfig(name="module", target=give(Jitter)))
    cfg.trainer.epochs, cfg.trainer.batch_size = 2, 8
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fitted = fit_population(cfg, X, y, [(np.arange(30), np.arange(30, 40))] * 2, [1, 2], "ce", outputs=CLASSES)
    assert torch.equal(torch.get_rng_state(), before)
    again = fit_population(cfg, X, y, [(np.arange(30), np.arange(30, 40))] * 2, [1, 2], "ce", outputs=CLASSES)
    assert torch.equal(fitted.last, again.last)  # the draws are the members' own, not the generator's state


class Tied(nn.Module):
    """Two layers sharing one weight (layer b's set to layer a's), both trained through it, as weight tying does."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a, self.b = nn.Linear(input_shape[0], input_shape[0]), nn.Linear(input_shape[0], input_shape[0])
        self.b.weight = self.a.weight
        self.head = nn.Linear(input_shape[0], out_features)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


class _Clamp(nn.Module):
    def forward(self, w):
        return w.clamp(-0.2, 0.2)


class Constrained(nn.Module):
    """A weight constrained through torch.nn.utils.parametrize (what runner's refusal of in-place writes offers)."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.body, self.head = nn.Linear(input_shape[0], 8), nn.Linear(8, out_features)
        torch.nn.utils.parametrize.register_parametrization(self.body, "weight", _Clamp())

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def _clamping(self, x):
    with torch.no_grad():
        self.head.weight.clamp_(-1, 1)  # a max-norm style constraint written in place, as in a plain loop
    return Frozen.forward(self, x)


class Encoder(nn.Module):
    """torch's TransformerEncoder over the features as tokens (multi-head attention, layer norm)."""

    def __init__(self, input_shape, out_features, d=8):
        super().__init__()
        self.embed = nn.Linear(1, d)
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(d, out_features)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x.unsqueeze(-1))).mean(1))


class Attend(nn.Module):
    """Attention written with F.scaled_dot_product_attention, which has no batching rule in torch (runner's own),
    with a mask from the row's own values (each member's own under vmap)."""

    def __init__(self, input_shape, out_features, d=8):
        super().__init__()
        self.embed, self.qkv, self.head = nn.Linear(1, d), nn.Linear(d, 3 * d), nn.Linear(d, out_features)

    def forward(self, x):
        q, k, v = self.qkv(self.embed(x.unsqueeze(-1))).view(x.shape[0], x.shape[1], 3, 2, -1).unbind(2)
        keys = (x > -2.5)[:, None, None, :]  # [B, 1, 1, tokens]: a value far below the mean is no key
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), keys)
        return self.head(out.transpose(1, 2).flatten(2).mean(1))


class RtdlMLP(nn.Module):
    """Models from public packages, wrapped in the smallest class a user would write (dropout off: a plain loop's
    masks come from torch's global generator, runner's from each member's stream)."""

    def __init__(self, input_shape, out_features):
        import rtdl_revisiting_models as rtdl

        super().__init__()
        self.net = rtdl.MLP(d_in=input_shape[0], d_out=out_features, n_blocks=2, d_block=16, dropout=0.0)

    def forward(self, x):
        return self.net(x)


class RtdlResNet(RtdlMLP):
    def __init__(self, input_shape, out_features):
        import rtdl_revisiting_models as rtdl

        nn.Module.__init__(self)  # batch norm after a Linear: its bias's gradient is 0 in exact arithmetic
        self.net = rtdl.ResNet(d_in=input_shape[0], d_out=out_features, n_blocks=2, d_block=16, d_hidden=None,
                               d_hidden_multiplier=2.0, dropout1=0.0, dropout2=0.0)


class RtdlFT(RtdlMLP):
    def __init__(self, input_shape, out_features):
        import rtdl_revisiting_models as rtdl

        nn.Module.__init__(self)
        self.net = rtdl.FTTransformer(n_cont_features=input_shape[0], cat_cardinalities=[], d_out=out_features,
                                      n_blocks=1, d_block=16, attention_n_heads=2, attention_dropout=0.0,
                                      ffn_d_hidden_multiplier=2.0, ffn_dropout=0.0, residual_dropout=0.0)

    def forward(self, x):
        return self.net(x, None)


class TabMini(RtdlMLP):
    def __init__(self, input_shape, out_features):
        import tabm

        nn.Module.__init__(self)
        self.net = tabm.TabM.make(n_num_features=input_shape[0], d_out=out_features, k=4, n_blocks=2, d_block=16,
                                  dropout=0.0)

    def forward(self, x):
        return self.net(x).mean(1)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's norm-act layer, written out (timm needs a torchvision beside it): batch norm, drop, then act."""

    def __init__(self, num_features, act=True, act_layer=nn.ReLU):
        super().__init__(num_features)
        self.drop, self.act = nn.Identity(), act_layer(inplace=True) if act else nn.Identity()

    def forward(self, x):
        x = nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                     self.training, self.momentum, self.eps)
        return self.act(self.drop(x))


# timm's layer patterns, written out (timm needs a torchvision that will not import beside the CPU torch build):
# small copies of resnet10t, mobilenetv3_small_050, efficientnet_b0 and convnext_atto on 8x8 images.


class SqueezeExcite(nn.Module):
    """timm's SE: global mean, 1x1 reduce, act, 1x1 expand, gate, scale."""

    def __init__(self, c, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.reduce, self.act, self.expand, self.gate = nn.Conv2d(c, max(c // 4, 2), 1), act(), nn.Conv2d(
            max(c // 4, 2), c, 1), gate()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class ResNet10t(nn.Module):
    """resnet10t: a deep stem (three 3x3 convs), max pool, basic blocks with an average-pool shortcut ('t')."""

    INPUT = (3, 8, 8)

    def __init__(self, input_shape, out_features, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], c // 2, 3, 1, 1, bias=False), BatchNormAct2d(c // 2),
                                  nn.Conv2d(c // 2, c // 2, 3, 1, 1, bias=False), BatchNormAct2d(c // 2),
                                  nn.Conv2d(c // 2, c, 3, 1, 1, bias=False), BatchNormAct2d(c),
                                  nn.MaxPool2d(3, 2, 1))
        self.conv1, self.bn1 = nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), BatchNormAct2d(2 * c)
        self.conv2, self.bn2 = nn.Conv2d(2 * c, 2 * c, 3, 1, 1, bias=False), BatchNormAct2d(2 * c, act=False)
        self.down = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c))
        self.fc = nn.Linear(2 * c, out_features)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))) + self.down(x))
        return self.fc(x.mean((2, 3)))


class MobileNetV3(nn.Module):
    """mobilenetv3_small: a stride-2 stem with hard-swish, a depthwise-separable block with squeeze-excite, a 1x1
    head conv with hard-swish."""

    INPUT = (3, 8, 8)

    def __init__(self, input_shape, out_features, c=8):
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], c, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(c, act_layer=nn.Hardswish)
        self.dw, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), BatchNormAct2d(c)
        self.se = SqueezeExcite(c)
        self.pw, self.bn3 = nn.Conv2d(c, c, 1, bias=False), BatchNormAct2d(c, act=False)
        self.head, self.act = nn.Conv2d(c, 16, 1), nn.Hardswish()
        self.classifier = nn.Linear(16, out_features)

    def forward(self, x):
        x = self.bn1(self.stem(x))
        x = x + self.bn3(self.pw(self.se(self.bn2(self.dw(x)))))
        return self.classifier(self.act(self.head(x.mean((2, 3), keepdim=True))).flatten(1))


class EfficientNet(nn.Module):
    """efficientnet_b0: an inverted-residual block (1x1 expand, depthwise 3x3, squeeze-excite with SiLU, 1x1
    project), SiLU throughout."""

    INPUT = (3, 8, 8)

    def __init__(self, input_shape, out_features, c=8):
        super().__init__()
        act = dict(act_layer=nn.SiLU)
        self.stem, self.bn1 = nn.Conv2d(input_shape[0], c, 3, 2, 1, bias=False), BatchNormAct2d(c, **act)
        self.expand, self.bn2 = nn.Conv2d(c, 4 * c, 1, bias=False), BatchNormAct2d(4 * c, **act)
        self.dw, self.bn3 = nn.Conv2d(4 * c, 4 * c, 3, 1, 1, groups=4 * c, bias=False), BatchNormAct2d(4 * c, **act)
        self.se = SqueezeExcite(4 * c, nn.SiLU, nn.Sigmoid)
        self.project, self.bn4 = nn.Conv2d(4 * c, c, 1, bias=False), BatchNormAct2d(c, act=False)
        self.classifier = nn.Linear(c, out_features)

    def forward(self, x):
        x = self.bn1(self.stem(x))
        x = x + self.bn4(self.project(self.se(self.bn3(self.dw(self.bn2(self.expand(x)))))))
        return self.classifier(x.mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: layer norm over the channels of an NCHW tensor."""

    def forward(self, x):
        return nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                                        self.eps).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """convnext_atto: a patchify stem with LayerNorm2d, a block of depthwise 7x7 conv, channels-last layer norm,
    an MLP of Linear layers with GELU, and layer scale (a parameter initialized to a constant)."""

    INPUT = (3, 8, 8)

    def __init__(self, input_shape, out_features, c=8):
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(input_shape[0], c, 2, 2), LayerNorm2d(c)
        self.dw, self.norm = nn.Conv2d(c, c, 7, 1, 3, groups=c), nn.LayerNorm(c)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))
        self.head = nn.Linear(c, out_features)

    def forward(self, x):
        x = self.norm0(self.stem(x))
        y = self.fc2(self.act(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1))))) * self.gamma
        return self.head((x + y.permute(0, 3, 1, 2)).mean((2, 3)))


IMAGES = [ResNet10t, MobileNetV3, EfficientNet, ConvNeXt]


CARDS = (3, 4)  # the last two features are categorical codes (dataset.encoding=codes): 0..2 in the tests' rows


class Coded(RtdlMLP):
    """rtdl's FT-Transformer fed numeric features and integer codes, as runner gives a class taking
    cat_cardinalities (numeric columns first, then one code per categorical column)."""

    def __init__(self, input_shape, out_features, cat_cardinalities=CARDS):
        import rtdl_revisiting_models as rtdl

        nn.Module.__init__(self)
        self.n_num = input_shape[0] - len(cat_cardinalities)
        self.net = rtdl.FTTransformer(n_cont_features=self.n_num, cat_cardinalities=list(cat_cardinalities),
                                      d_out=out_features, n_blocks=1, d_block=16, attention_n_heads=2,
                                      attention_dropout=0.0, ffn_d_hidden_multiplier=2.0, ffn_dropout=0.0,
                                      residual_dropout=0.0)

    def forward(self, x):
        return self.net(x[:, : self.n_num], x[:, self.n_num :].long())


class LucidTab(Coded):
    """tab-transformer-pytorch's TabTransformer: attention over the categorical codes' embeddings."""

    def __init__(self, input_shape, out_features, cat_cardinalities=CARDS, kind="TabTransformer"):
        import tab_transformer_pytorch as tt

        nn.Module.__init__(self)
        self.n_num = input_shape[0] - len(cat_cardinalities)
        act = {"mlp_act": nn.ReLU()} if kind == "TabTransformer" else {}  # its default (None) is not callable
        self.net = getattr(tt, kind)(categories=tuple(cat_cardinalities), num_continuous=self.n_num, dim=8, depth=1,
                                     heads=2, dim_head=4, dim_out=out_features, **act)

    def forward(self, x):
        return self.net(x[:, self.n_num :].long(), x[:, : self.n_num])


class LucidFT(LucidTab):
    """tab-transformer-pytorch's FTTransformer (a 0-dim parameter among its own)."""

    def __init__(self, input_shape, out_features, cat_cardinalities=CARDS):
        super().__init__(input_shape, out_features, cat_cardinalities, "FTTransformer")


ZOO = {RtdlMLP: "rtdl_revisiting_models", RtdlResNet: "rtdl_revisiting_models", RtdlFT: "rtdl_revisiting_models",
       TabMini: "tabm", Coded: "rtdl_revisiting_models", LucidTab: "tab_transformer_pytorch",
       LucidFT: "tab_transformer_pytorch"}


def _population(cls, members, path="auto"):
    return build_model(ModelConfig(name="module", target=give(cls), path=path), members, _shape(cls), CLASSES)


def _alone(cls, seed):
    """The module as a user builds it after Lightning's seed_everything(seed): Python's, NumPy's and torch's
    generators seeded."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return cls(_shape(cls), CLASSES)


def _shape(cls) -> tuple[int, ...]:
    """A row's shape for the class: a table's FEATURES, or the images an image model declares (INPUT)."""
    return getattr(cls, "INPUT", (FEATURES,))


@pytest.mark.parametrize("cls", [Recurrent, Gated, Tokens, Branchy, Frozen, Fourier, Counter, Encoder, *IMAGES,
                                 *ZOO])
def test_each_member_starts_as_the_module_built_under_its_seed(cls):
    if cls in ZOO:
        pytest.importorskip(ZOO[cls])
    seeds = [4, 9, 23]
    model = _population(cls, len(seeds))
    model.initialize(seeds, "default")
    for e, seed in enumerate(seeds):
        own = dict(_alone(cls, seed).named_parameters())
        assert {name.removeprefix("norm:") for name in model.slots} == set(own)
        for name in model.slots:
            torch.testing.assert_close(model.view(name)[e], own[name.removeprefix("norm:")], atol=0, rtol=0)
        for name, buffer in _alone(cls, seed).named_buffers():  # and its buffers (batch norm's: runner's rows)
            if name in model.buffers:
                assert torch.equal(model.stat(BUFFER + name)[e, 0].view(buffer.shape).to(buffer.dtype), buffer)
    if cls is Fourier:
        assert not torch.equal(model.stat(BUFFER + "projection")[0], model.stat(BUFFER + "projection")[1])
    if cls is Tokens:  # what runner's own rule drew before: a CLS token of zeros, every normalizer weight 1
        assert model.view("normalizer.weight").std() > 0.1 and model.view("cls").abs().max() > 0
        assert model.view("scale").eq(0.5).all() and model.view("temperature").eq(2.0).all()


@pytest.mark.parametrize("cls, path", [(Recurrent, "members in turn: vmap cannot run its forward"),
                                       (Gated, "members in turn: vmap cannot run its forward"),
                                       (Branchy, "members in turn: vmap cannot run its forward"),
                                       (Frozen, "stacked fast path"), (Tokens, "generic vmap path"),
                                       (OwnNorm, "members in turn: its forward mixes a batch's rows"),
                                       (Jitter, "members in turn: its forward draws random numbers"),
                                       (Tied, "stacked fast path"),
                                       (Leftover, "stacked fast path; 2 tensors its forward never uses stay as built "
                                                  "(aux.weight, aux.bias)")])
def test_a_module_vmap_cannot_run_trains_its_members_in_turn_and_the_header_says_why(cls, path):
    assert _population(cls, 2).path.startswith(path)


def test_model_path_vmap_refuses_what_vmap_cannot_run_in_one_line():
    with pytest.raises(RunnerError, match=r"cannot take the vmap path: vmap cannot run its forward \(.*\) \(set "
                                          r"model.path=auto to train its members in turn\)"):
        _population(Recurrent, 2, path="vmap")


def _member(cls, seed, start: dict[str, torch.Tensor], dtype=torch.float32) -> nn.Module:
    """The module built under the seed, holding the member's starting weights (the test above checks those)."""
    model = _alone(cls, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(start[name])
    return model.to(dtype)


def _torch_loop(cls, seed, start, X, y, train, optim, epochs, dtype=torch.float32, layout=torch.contiguous_format):
    """The plain PyTorch loop a user would write: the module built under the seed, full-batch steps on its rows
    (`layout`: images and weights in torch.channels_last, as a user may train them, which sums in another order)."""
    model = _member(cls, seed, start, dtype).to(memory_format=layout)
    X = X.to(dtype).contiguous(memory_format=layout)
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optim.name.value]
    extra = {"momentum": optim.momentum} if optim.name.value == "sgd" else {}
    trained = [p for p in model.parameters() if p.requires_grad]
    kernels = optim.weight_decay_on.value == "kernels"  # the default: nanoGPT's and timm's rule, kernels only
    groups = [{"params": [p for p in trained if p.dim() > 1 or not kernels]},
              {"params": [p for p in trained if p.dim() <= 1 and kernels], "weight_decay": 0.0}]
    opt = kind(groups, lr=optim.lr, weight_decay=optim.weight_decay, **extra)
    rows = torch.as_tensor(train)
    for _ in range(epochs):
        opt.zero_grad()  # a parameter the forward never uses keeps .grad None: torch.optim skips it
        nn.functional.cross_entropy(model(X[rows]), y[rows].long()).backward()
        opt.step()
    return model


def _zero_gradient(cls, seed, start, X, y, train) -> dict[str, torch.Tensor]:
    """Each parameter's entries whose float64 gradient at the start is below what float32 resolves: 0 (an
    invariance of the model) or under 1e-6 of the largest entry (a hyper-connection's stream weights, 4e-8 of 0.6),
    where float32's sums of much larger terms leave only rounding noise."""
    model = _member(cls, seed, start, torch.float64)
    rows = torch.as_tensor(train)
    nn.functional.cross_entropy(model(X[rows].double()), y[rows].long()).backward()
    largest = max(p.grad.abs().max() for p in model.parameters() if p.grad is not None)
    return {name: (p.grad.abs() < 1e-6 * largest) if p.grad is not None else torch.ones_like(p, dtype=torch.bool)
            for name, p in model.named_parameters()}


SLOW = (LucidTab, LucidFT, *IMAGES)  # 5-40 s each on two cores: make test-slow (images train from the shell below)


@pytest.mark.parametrize("cls", [Recurrent, Tokens, Branchy, Frozen, Leftover, BranchyLeftover, Sometimes, Fourier,
                                 Counter, OwnNorm, Tied, Constrained, Encoder, Attend, *(pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in IMAGES + list(ZOO))])
@pytest.mark.parametrize("optim", [OptimConfig(name=OptimName.adamw, lr=0.01, weight_decay=0.1),
                                   pytest.param(OptimConfig(name=OptimName.adam, lr=0.01, weight_decay=0.05,
                                                            weight_decay_on=DecayOn.all), marks=pytest.mark.slow),
                                   pytest.param(OptimConfig(name=OptimName.sgd, lr=0.1, momentum=0.9, weight_decay=0.01),
                                                marks=pytest.mark.slow)],
                         ids=["adamw", "adam-decay-all", "sgd"])
@pytest.mark.filterwarnings("error:There is a performance drop:UserWarning")  # vmap running members one by one
def test_every_member_equals_a_plain_torch_optim_loop(cls, optim):
    if cls in ZOO:
        pytest.importorskip(ZOO[cls])
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(60, *_shape(cls), generator=g), torch.randint(0, CLASSES, (60,), generator=g).float()
    if X.dim() == 2:
        X[:, -len(CARDS):] = torch.randint(0, min(CARDS), (60, len(CARDS)), generator=g).float()  # codes, for those
    rows = [(np.arange(0, 40), np.arange(40, 60)), (np.arange(7, 33), np.arange(40, 60)),  # ragged: padding
            (np.arange(12, 51), np.arange(51, 60))]
    seeds, epochs = [3, 7, 11], 6
    cfg = Config(model=ModelConfig(name="module", target=give(cls)), optim=optim)
    cfg.trainer.epochs, cfg.trainer.batch_size = epochs, "full"
    cfg.trainer.early_stopping = EarlyStoppingConfig(patience=None)
    model = build_model(cfg.model, len(seeds), _shape(cls), CLASSES)
    model.initialize(seeds, "default")  # as fit_population builds it: each member's starting weights
    starts = [{name.removeprefix("norm:"): model.view(name)[e].detach().clone() for name in model.slots}
              for e in range(len(seeds))]
    fitted = fit_population(cfg, X, y, rows, seeds, "ce", outputs=CLASSES)
    for e, seed in enumerate(seeds):
        alone = dict(_torch_loop(cls, seed, starts[e], X, y, rows[e][0], optim, epochs).named_parameters())
        # The bound is PyTorch's own float32 rounding: 1e-5 plus twice how far its float32 loop ends from its
        # float64 loop (images: or from its channels-last float32 loop). Where a gradient is 0 in exact arithmetic
        # (attention's key bias, a bias before batch norm)
        # or below float32's resolution (found in float64 at the start), float32 leaves rounding noise that Adam
        # normalizes into steps of up to lr, differently in any summation order: there the bound is Adam's own,
        # epochs x lr.
        exact = dict(_torch_loop(cls, seed, starts[e], X, y, rows[e][0], optim, epochs, torch.float64)
                     .named_parameters())
        # Images: PyTorch's own spread is also how far its channels-last loop ends from its default one.
        other = dict(_torch_loop(cls, seed, starts[e], X, y, rows[e][0], optim, epochs, layout=torch.channels_last)
                     .named_parameters()) if X.dim() == 4 else alone
        zero = _zero_gradient(cls, seed, starts[e], X, y, rows[e][0])
        for name, slot in model.slots.items():
            key = name.removeprefix("norm:")
            ours, theirs = fitted.last[e, slot.offset : slot.offset + slot.size].view(slot.shape), alone[key].detach()
            spread = torch.maximum((theirs - exact[key].detach().float()).abs(), (theirs - other[key].detach()).abs())
            # Images under Adam: a deep batch-normed stem makes any float32 order end apart (PyTorch's own two
            # layouts differ by up to 1.5e-2 on resnet10t's pattern in 6 steps), entry by entry unpredictably: the
            # envelope is then each tensor's, 6x PyTorch's largest spread in it (measured: 5.2x at most).
            chaotic = X.dim() == 4 and optim.name in (OptimName.adamw, OptimName.adam)
            bound = 1e-5 + (6 * spread.max() if chaotic else 2 * spread)
            if optim.name in (OptimName.adamw, OptimName.adam):
                bound = torch.where(zero[key], epochs * optim.lr, bound)
            assert ((ours - theirs).abs() <= bound).all(), (e, name, ours - theirs, bound)
        for name, buffer in _torch_loop(cls, seed, starts[e], X, y, rows[e][0], optim, epochs).named_buffers():
            if name in model.buffers:  # each member's own, as its forward left them
                offset, width, _ = model.stat_slots[BUFFER + name]
                ours = fitted.last_stats[e, offset : offset + width]
                assert torch.equal(ours.view(buffer.shape).to(buffer.dtype), buffer), (e, name, ours, buffer)
    if cls in (Frozen, Leftover, BranchyLeftover):  # never moved, even by weight decay
        name = {Frozen: "body.weight", Leftover: "aux.weight", BranchyLeftover: "aux.weight"}[cls]
        start, slot = dict(_alone(cls, seeds[0]).named_parameters())[name], model.slots[name]
        assert torch.equal(fitted.last[0, slot.offset : slot.offset + slot.size].view(start.shape), start)


@pytest.mark.parametrize("cls, says", [
    (type("Empty", (nn.Module,), {"__init__": lambda self, input_shape, out_features: nn.Module.__init__(self),
                                  "forward": lambda self, x: x[:, :CLASSES] * 2}), "has no parameters"),
    (type("Ice", (Frozen,), {"__init__": lambda self, input_shape, out_features: Frozen.__init__(
        self, input_shape, out_features) or self.requires_grad_(False) and None}), "has only frozen parameters"),
    (type("Bypass", (Frozen,), {"forward": lambda self, x: x[:, :CLASSES] * 2}),
     "its forward uses none of its parameters, so there is nothing to train"),
    (type("Phased", (Frozen,), {"__init__": lambda self, input_shape, out_features: Frozen.__init__(
        self, input_shape, out_features) or self.register_buffer("phase", torch.randn(3, dtype=torch.cfloat))}),
     "buffer phase is complex and differs by member"),
    (type("Clamping", (Frozen,), {"forward": _clamping}), "its forward changes parameter head.weight in place"),
    (type("Rounded", (Frozen,), {"forward": lambda self, x: Frozen.forward(self, x).long()}),
     "its forward returns a torch.int64 tensor; the loss needs floating-point outputs"),
])
def test_a_module_that_cannot_train_is_one_line(cls, says):
    with pytest.raises(RunnerError, match=says):
        _population(cls, 2)


CALLS = []


def noisy_rows(n=80):
    """A user's loader that returns other rows each call (fresh noise), and counts its calls."""
    CALLS.append(n)
    g = np.random.default_rng(len(CALLS))
    X = g.normal(size=(n, FEATURES))
    return X, (X[:, 0] > 0).astype(int)


def test_the_users_loader_is_called_once_per_run_so_what_was_checked_trains(tmp_path):
    import runner

    CALLS.clear()
    first = runner.train("trainer.epochs=2", "trainer.progress=false", "plots=false", data=noisy_rows,
                         run_dir=tmp_path / "a")
    assert len(CALLS) == 1
    runner.train("trainer.epochs=2", "trainer.progress=false", "plots=false", data=noisy_rows, run_dir=tmp_path / "b")
    assert len(CALLS) == 2  # a new run calls it again
    assert first.predictions["y_true"].notna().all()


@pytest.mark.parametrize("size, cls, lr, alone_in_turn, workers", [
    (1, "Tokens", 0.05, True, 1), (2, "Tokens", 0.05, True, 1), (1, "Leftover", 0.01, False, 1),
    (3, "Tokens", 0.05, True, 2), (1, "Leftover", 0.01, False, 2)])
def test_members_trained_in_groups_equal_the_whole_population(size, cls, lr, alone_in_turn, workers):
    """trainer.stack (or the measurement) trains the members in groups, one group after another, and
    trainer.workers side by side in worker processes: every weight, average, epoch and curve is the whole
    population's. (Tokens takes the vmap path, its groups of one in turn as PyTorch runs it alone; Leftover the
    fast path, its groups of one on it, as the measurement may choose.)"""
    from runner.config.schema import AvgName
    from runner.engine.stacking import fit_in_groups

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(60, FEATURES, generator=g), torch.randint(0, CLASSES, (60,), generator=g).float()
    rows = [(np.arange(0, 40), np.arange(40, 60)), (np.arange(7, 33), np.arange(40, 60)),
            (np.arange(12, 51), np.arange(51, 60))]
    seeds = [3, 7, 11]
    cfg = Config(model=ModelConfig(name="module", target=give(globals()[cls])),
                 optim=OptimConfig(name=OptimName.adam, lr=lr))
    cfg.trainer.epochs, cfg.trainer.batch_size, cfg.avg.name = 12, 16, AvgName.ema
    cfg.trainer.early_stopping = EarlyStoppingConfig(patience=2)

    def run(at_once, workers=1):
        model = build_model(cfg.model, len(seeds), (FEATURES,), CLASSES)
        model.initialize(seeds, "default")
        inputs = MemberInputs(X, y, torch.zeros(3, FEATURES), torch.ones(3, FEATURES))
        data = PopulationData(inputs, [r[0] for r in rows], [r[1] for r in rows], seeds)
        return fit_in_groups(model, data, cfg, "ce", at_once, alone_in_turn=alone_in_turn, workers=workers)

    whole, groups = run(3), run(size, workers)
    if cls == "Tokens":  # its members stop at different epochs (the small MLP's all stop at its third)
        assert len(set(whole.epochs_run)) > 1
    for name in ("best", "last", "best_stats", "last_stats"):
        torch.testing.assert_close(getattr(groups, name), getattr(whole, name), atol=1e-6, rtol=0)
    for name in ("epochs_run", "best_epoch", "diverged_epoch"):
        assert np.array_equal(getattr(groups, name), getattr(whole, name)), name
    assert groups.history.keys() == whole.history.keys()
    for name, curve in whole.history.items():
        np.testing.assert_allclose(groups.history[name], curve, atol=1e-6, rtol=0, equal_nan=True, err_msg=name)
    torch.testing.assert_close(groups.averages["ema"].flat, whole.averages["ema"].flat, atol=1e-6, rtol=0)
    assert groups.averages["ema"].epochs == whole.averages["ema"].epochs


def test_how_many_members_step_together(monkeypatch):
    from runner.engine import stacking
    from runner.engine.stacking import STACKED_WINS, Stacking, members_at_once

    cfg = Config(model=ModelConfig(name="module", target=give(Tokens)))
    model = build_model(cfg.model, 4, (FEATURES,), CLASSES)
    X, y = torch.randn(30, FEATURES), torch.zeros(30)
    data = PopulationData(MemberInputs.identity(X, y, 4), [np.arange(k, 20 + k) for k in range(4)], [[]] * 4,
                          [0, 1, 2, 3])
    chosen = members_at_once(model, cfg, data, 16)
    timings = chosen.seconds
    assert set(timings) == {"4 stacked", "1 in turn"} and all(t > 0 for t in timings.values())
    assert chosen.at_once == (4 if timings["4 stacked"] <= STACKED_WINS * timings["1 in turn"] else 1)  # stacked where it wins
    in_turn = Config(model=ModelConfig(name="module", target=give(Recurrent)))  # members in turn within each step:
    chosen = members_at_once(build_model(in_turn.model, 4, (FEATURES,), CLASSES), in_turn, data, 16)
    assert (chosen.at_once, chosen.seconds) == (4, {})  # together they share the step's work, untimed
    cfg.trainer.stack = 3
    assert members_at_once(model, cfg, data, 16) == Stacking(3, "trainer.stack")
    cfg.trainer.stack = 9
    assert members_at_once(model, cfg, data, 16) == Stacking(4)
    mlp = Config()
    assert members_at_once(build_model(mlp.model, 4, FEATURES, 1), mlp, data, 16) == Stacking(4)  # runner's own
    fast = Config(model=ModelConfig(name="module", target=give(Frozen)))  # the fast path: one member on it timed too
    with monkeypatch.context() as patch:  # where the group does not clearly win
        patch.setattr(stacking, "decided", lambda *seconds: False)
        chosen = members_at_once(build_model(fast.model, 4, (FEATURES,), CLASSES), fast, data, 16)
    timings = chosen.seconds
    assert set(timings) == {"4 stacked", "1 stacked", "1 in turn"}
    alone = min(timings["1 stacked"], timings["1 in turn"])  # either way one member's memory: the faster
    assert chosen.at_once == (4 if timings["4 stacked"] <= STACKED_WINS * alone else 1)
    assert chosen.in_turn == (chosen.at_once > 1 or timings["1 in turn"] <= timings["1 stacked"])


def test_the_stacking_timing_stops_early_only_when_one_way_clearly_wins(monkeypatch):
    """Two timed steps each (after one to warm up) where one way is CLEAR times past the margin or the timing has
    taken PROBE_SECONDS, all REPEATS where the ways are close: on a scripted clock, each probe's step taking its own
    seconds per member."""
    from runner.engine import stacking

    class Probe:
        def __init__(self, members, each):
            self.n_members, self.each, self.steps = members, each, 0
            self.flat = torch.zeros(1, requires_grad=True)

        def select(self, keep):
            self.n_members = int(keep.sum())

        def train(self):
            pass

        def __call__(self, x, step):
            self.steps += 1
            clock[0] += self.each * len(x)
            return self.flat * 1

    clock = [0.0]
    monkeypatch.setattr(stacking.time, "perf_counter", lambda: clock[0])
    x = torch.zeros(4, 2, 3)

    def steps(stacked_each, alone_each):
        probes = [Probe(4, stacked_each), Probe(4, alone_each)]
        seconds = stacking._seconds_per_member(probes, [x, x[:1]], stacking.decided)
        assert seconds == pytest.approx([stacked_each, alone_each])
        return [p.steps for p in probes]

    assert steps(0.001, 0.01) == [3, 3] and steps(0.03, 0.01) == [3, 3]  # clear: stacked wins / loses
    assert steps(0.008, 0.01) == [stacking.REPEATS + 1] * 2  # close to the margin: every timed step
    assert steps(0.8, 1.0) == [3, 3]  # close, but past PROBE_SECONDS: slow steps vary little


class Wide(nn.Module):
    """A Linear to 1000 units and a ReLU: its training forward keeps at least the ReLU's output, 1000 floats a row."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.up, self.head = nn.Linear(input_shape[0], 1000), nn.Linear(1000, out_features)

    def forward(self, x):
        return self.head(torch.relu(self.up(x)))


def test_a_stacked_group_stays_within_the_memory_budget():
    from runner.engine.stacking import PEAK_PER_SAVED, STACKED_WINS, members_at_once

    cfg = Config(model=ModelConfig(name="module", target=give(Wide)))
    model = build_model(cfg.model, 6, (FEATURES,), CLASSES)
    X, y = torch.randn(40, FEATURES), torch.zeros(40)
    data = PopulationData(MemberInputs.identity(X, y, 6), [np.arange(30)] * 6, [[]] * 6, list(range(6)))
    roomy = members_at_once(model, cfg, data, 32)
    relu = 32 * 1000 * 4  # the ReLU's output at a full batch of 32 rows, per member
    state = 4 * model.size * 4  # parameters, gradient and Adam's two moments
    # the inputs, the Linear's output, the ReLU's, with the backward's share on top
    assert PEAK_PER_SAVED * relu + state <= roomy.member_bytes <= PEAK_PER_SAVED * 4 * relu + state
    cfg.trainer.memory_gb = 2.5 * roomy.member_bytes / 2**30  # room for two stacked members
    tight = members_at_once(model, cfg, data, 32)
    alone = min(s for way, s in tight.seconds.items() if way.startswith("1 "))  # in turn, or stacked alone
    wins = tight.seconds["2 stacked"] <= STACKED_WINS * alone  # two are timed, not six
    assert (tight.at_once, tight.bound) == ((2, "memory") if wins else (1, "time"))
    assert tight.record()["budget_mib"] == pytest.approx(2.5 * roomy.member_bytes / 2**20, rel=1e-3)


def test_on_the_cpu_a_stacked_group_adds_at_most_half_of_one_member_at_a_times_memory():
    from runner.engine.stacking import CPU_GROWTH, _budget_bytes

    resident = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    member = 2**30  # a member whose training takes 1 GiB: one at a time, the process holds resident + 1 GiB
    budget = _budget_bytes(Config(), torch.device("cpu"), member)
    assert budget <= (1 + CPU_GROWTH) * (resident + member) - resident + 2**24  # the process grows a little meanwhile
    assert budget // member < 2 or resident > member  # no room for two such members beside this small process
    cfg = Config()
    cfg.trainer.memory_gb = 3.0
    assert _budget_bytes(cfg, torch.device("cpu"), member) == 3 * 2**30  # trainer.memory_gb decides alone


class ActNorm2d(BatchNormAct2d):
    """The same parts in another order (act first): not timm's pattern, refused."""

    def forward(self, x):
        return super().forward(self.act(x))


class TimmBlock(nn.Module):
    """A timm-style stem: conv, BatchNormAct2d, conv, BatchNormAct2d, pool, head."""

    def __init__(self, input_shape, out_features, norm=BatchNormAct2d):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(input_shape[0], 4, 3, padding=1, bias=False), norm(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), norm(4, act=False)
        self.head = nn.Linear(4, out_features)

    def forward(self, x):
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("path", ["auto", "loop"])
def test_timms_norm_act_layers_keep_each_members_statistics_and_equal_each_member_alone(path):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(50, 1, 6, 6, generator=g), torch.randint(0, 3, (50,), generator=g).float()
    rows = [(np.arange(0, 30), np.arange(30, 50)), (np.arange(4, 27), np.arange(30, 50))]
    cfg = Config(model=ModelConfig(name="module", target=give(TimmBlock), path=path),
                 optim=OptimConfig(name=OptimName.adam, lr=0.01))
    cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.early_stopping = 4, 16, EarlyStoppingConfig(patience=2)
    stacked = fit_population(cfg, X, y, rows, [3, 7], "ce", outputs=3)
    assert stacked.last_stats.shape[1] == 16 and not torch.equal(stacked.last_stats[0], stacked.last_stats[1])
    for e, seed in enumerate([3, 7]):
        assert_member_equals_alone(stacked, e, fit_population(cfg, X, y, [rows[e]], [seed], "ce", outputs=3))


def test_a_batch_norm_subclass_of_another_shape_is_one_line():
    class Other(TimmBlock):
        def __init__(self, input_shape, out_features):
            super().__init__(input_shape, out_features, ActNorm2d)

    with pytest.raises(RunnerError, match=r"bn1 is ActNorm2d; runner keeps per-member statistics for .* \(timm's "
                                          r"BatchNormAct2d\)"):
        build_model(ModelConfig(name="module", target=give(Other)), 2, (1, 6, 6), 3)


@pytest.mark.parametrize("cls", [RtdlResNet, Coded, ConvNeXt, *(pytest.param(c, marks=pytest.mark.slow) for c in (
    RtdlFT, TabMini, LucidTab, LucidFT, ResNet10t, MobileNetV3, EfficientNet))])
def test_each_zoo_model_trains_from_the_shell_and_predict_rebuilds_it(cls, tmp_path, capsys, monkeypatch):
    """The zoo from the shell: a table model on heart (the embedding ones get its categorical columns as codes),
    an image model on digits; `runner predict` rebuilds a table model from the class named and gives each
    member's test probabilities as the run scored them."""
    import io
    import sys

    import pandas as pd

    from runner.commands.cli import main
    from runner.paths import bundled_data

    pytest.importorskip(ZOO.get(cls, "torch"))
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    target = f"test_any_module:{cls.__name__}"
    data = ["dataset=digits"] if cls in IMAGES else []
    run = tmp_path / "run"
    assert main(["train", *data, "model=module", f"model.target={target}", "eval=kfold", "eval.k=2",
                 "trainer.epochs=2", "trainer.progress=false", "plots=false", f"hydra.run.dir={run}"]) == 0
    header = " ".join(capsys.readouterr().out.split())
    assert f"{cls.__name__} (" in header and ("as codes" in header) == (cls in (Coded, LucidTab, LucidFT))
    if cls in IMAGES:
        return
    assert main(["predict", str(run), "--data", str(bundled_data("heart.csv")), "--model", target]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    scored = pd.read_csv(run / "predictions.csv")
    for member, test in scored[scored["split"] == "test"].groupby("member"):
        np.testing.assert_allclose(table.set_index("row").loc[test["row"], f"m{member}.p_1"], test["p_1"], atol=1e-5)
