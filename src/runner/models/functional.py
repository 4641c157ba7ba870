"""Any ordinary nn.Module as a population: its parameters are the rows of [E, P], its forward run with each member's
rows bound in place of its parameters (as torch.func.functional_call does), under vmap.

A new model is one module file (an ordinary `nn.Module` built from a ModelConfig and the input shape) plus one
YAML; a `BUILDERS` entry puts it in the model registry. Dropout inside such a module must be this file's `Dropout`,
which draws each member's masks from its own stream (torch's dropout would share one generator), and batch norm
this file's `BatchNorm`, which keeps each member's running statistics and counts only its real rows (a member
with fewer rows in a batch has padding that torch's BatchNorm would count). `own_layers` swaps torch's in.
"""

import contextlib
import contextvars
import math
import random

import numpy as np

import torch
from torch import nn
from torch._C._functorch import _add_batch_dim, maybe_current_level
from torch.func import vmap

from runner.errors import RunnerError
from runner.models.batching import Layers
from runner.models.layers import batch_norm
from runner.models.noise import MemberNoise, draw_key, dropout_scale
from runner.models.stacked import BUFFER, Population

# The member being run: (key, step, its row mask [B], its running statistics by name, the population's MemberNoise
# under vmap or None for a member run alone).
_member = contextvars.ContextVar("member")


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from the running member's own counter-based stream."""

    def __init__(self, p: float, stream: int = 0):
        super().__init__()
        self.p, self.stream = p, stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        key, step, _, _, noise = _member.get()
        if noise is None:  # a member run alone (models/looped.py)
            return x * dropout_scale(draw_key(key, step, self.stream), tuple(x.shape), self.p)
        # Under vmap: every member's masks drawn in one call on the population's MemberNoise (a member's own hash,
        # vmapped op by op, could not write its chunks in place nor take the masks drawn ahead for the epoch),
        # given to the product as a tensor batched at vmap's level, as vmap batches its inputs (a custom batching
        # rule's dispatch was 7% of an FT-Transformer's fit: 5.0-5.3 s against 4.7-4.9 s now).
        masks = noise.dropout_scale(tuple(x.shape), self.stream, self.p)
        return x * _add_batch_dim(masks, 0, maybe_current_level())


class BatchNorm(nn.Module):
    """Batch norm over the running member's real rows (its mask), with its own running mean and variance."""

    def __init__(self, features: int, spatial: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.features, self.spatial, self.eps, self.momentum = features, spatial, eps, momentum
        self.weight = nn.Parameter(torch.ones(features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(features)) if affine else None
        self.stat_name = ""  # set by FunctionalPopulation: where its statistics live in the population's `stats`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, mask, stats, _ = _member.get()
        if mask is None or not self.training:  # only real rows, or each row alone: torch's own fused batch norm
            return nn.functional.batch_norm(x, stats[self.stat_name + ".mean"], stats[self.stat_name + ".var"],
                                            self.weight, self.bias, self.training, self.momentum, self.eps)
        shape = (1, self.features) + (1,) * (x.dim() - 2)  # x: [B, C] or [B, C, *spatial]
        dims = (0, *range(2, x.dim()))
        weight = None if mask is None else mask.view(-1, *([1] * (x.dim() - 1)))
        mean, var = stats[self.stat_name + ".mean"].view(shape), stats[self.stat_name + ".var"].view(shape)
        out = batch_norm(x, weight, dims, mean, var, None, self.training, self.momentum, self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class NormAct(BatchNorm):
    """Batch norm, then dropout, then an activation, as timm's BatchNormAct2d/BatchNormAct1d (a torch BatchNorm
    subclass holding `drop` and `act`) compute them: runner's per-member batch norm with its `drop` and `act`."""

    def __init__(self, features: int, spatial: int, eps: float, momentum: float, affine: bool, drop: nn.Module,
                 act: nn.Module):
        super().__init__(features, spatial, eps, momentum, affine)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _norm_act(module: nn.Module) -> bool:
    """A subclass of torch's BatchNorm1d/2d whose only additions are `drop` and `act` layers, and whose output is
    act(drop(batch norm)), checked on random inputs in eval mode (timm's norm-act layers)."""
    if not (isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and type(module) not in (nn.BatchNorm1d, nn.BatchNorm2d)
            and {name for name, _ in module.named_children()} == {"drop", "act"}):
        return False
    import copy

    probe = copy.deepcopy(module).eval()
    g = torch.Generator().manual_seed(0)
    shape = (4, module.num_features) + ((3, 3) if isinstance(module, nn.BatchNorm2d) else ())
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        for value in (probe.running_mean, probe.running_var, probe.weight, probe.bias):  # not the identity it starts as
            if value is not None:
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        expected = probe.act(probe.drop(nn.functional.batch_norm(
            x, probe.running_mean, probe.running_var, probe.weight, probe.bias, False, 0.0, probe.eps)))
        return torch.allclose(probe(x), expected, atol=1e-6)


def own_layers(template: nn.Module, where: str) -> nn.Module:
    """`template` with torch's nn.Dropout and nn.BatchNorm1d/2d swapped for the per-member ones above (same
    settings); other dropout and norm kinds that need per-member state are refused in one line."""
    stream = 0
    for name, module in list(template.named_modules()):
        parent, _, child = name.rpartition(".")
        swap = None
        if type(module) is nn.Dropout:
            swap, stream = Dropout(module.p, stream), stream + 1
        elif type(module) in (nn.BatchNorm1d, nn.BatchNorm2d) or _norm_act(module):
            if module.momentum is None or not module.track_running_stats:
                raise RunnerError(f"{where}: {name} is batch norm with momentum=None or without running "
                                  "statistics; runner keeps each member's with a momentum (torch's default 0.1)")
            settings = (module.num_features, 1 if isinstance(module, nn.BatchNorm1d) else 2, module.eps,
                        module.momentum, module.affine)
            swap = NormAct(*settings, module.drop, module.act) if _norm_act(module) else BatchNorm(*settings)
        elif isinstance(module, nn.modules.dropout._DropoutNd) and not isinstance(module, Dropout):
            raise RunnerError(f"{where}: {name} is {type(module).__name__}; runner draws each member's masks for "
                              "nn.Dropout only: use nn.Dropout there")
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, BatchNorm):
            raise RunnerError(f"{where}: {name} is {type(module).__name__}; runner keeps per-member statistics for "
                              "nn.BatchNorm1d and nn.BatchNorm2d and their subclasses that add only `drop` and `act` "
                              "(timm's BatchNormAct2d): use one of those, nn.GroupNorm or nn.LayerNorm")
        if swap is not None:
            if not name:
                raise RunnerError(f"{where}: the model is a bare {type(module).__name__}")
            setattr(template.get_submodule(parent) if parent else template, child, swap)
    return template


@contextlib.contextmanager
def seeded(seed: int):
    """Within: Python's, NumPy's and torch's global generators seeded with `seed`, as Lightning's seed_everything
    seeds them (a package may draw its initialization from any of them: hyper-connections uses Python's random);
    after: each as it was, since runner's own random state is not the module's to move."""
    python, legacy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(python)
        np.random.set_state(legacy)


class FunctionalPopulation(Population):
    """E independent copies of `template`, stacked in one [E, P] tensor and run for all members with vmap."""

    def __init__(self, template: nn.Module, members: int, d_out: int, make=None):
        """`make`: builds the module anew (the user's class with its arguments); each member is then the module
        `make` builds under that member's seed, its own initialization kept (None: runner's rule, model.init)."""
        super().__init__(members)
        own_layers(template, "the model")
        self.template, self.outputs, self.make = template, d_out, make
        self._modes: tuple[bool, bool] | None = None  # (training, sampling) the template was last set to
        self._owners: list | None = None  # (module, attribute, parameter name) of each parameter, for `bound`
        self.norms = [m for m in template.modules() if isinstance(m, BatchNorm)]
        for i, norm in enumerate(self.norms):
            norm.stat_name = f"bn{i}"
            self.add_stat(f"bn{i}.mean", norm.features, 0.0)
            self.add_stat(f"bn{i}.var", norm.features, 1.0)
        # The module's own buffers (a random projection drawn in __init__, a counter its forward updates): each
        # member holds its own, as built under its seed, among the statistics (float32, so integers exactly to 2**24).
        self.buffers = {name: (tuple(b.shape), b.dtype) for name, b in template.named_buffers() if not b.is_complex()}
        for name, (shape, _) in self.buffers.items():
            self.add_stat(BUFFER + name, math.prod(shape), 0.0)
        self._buffer_owners: list | None = None  # (module, attribute, buffer name), for `bound`
        self.draws = False  # its forward draws random numbers of its own (models/looped.py seeds them per member)
        params = dict(template.named_parameters())
        for name, p in params.items():
            owner = params.get(name.rsplit(".", 1)[0] + ".weight", p)  # a bias's fan-in is its weight's
            fan_in = math.prod(owner.shape[1:]) if owner.dim() > 1 else 0
            fan_out = owner.shape[0] * math.prod(owner.shape[2:]) if owner.dim() > 1 else p.numel()
            norm = isinstance(_module_of(template, name), (nn.GroupNorm, nn.LayerNorm, BatchNorm))
            self.add(("norm:" if norm else "") + name, tuple(p.shape), kernel=p.dim() > 1 and not norm,
                     fan_in=fan_in, fan_out=fan_out, trainable=p.requires_grad)
        self.allocate()
        with torch.no_grad():
            for name, b in template.named_buffers():
                if name in self.buffers:
                    self.stat(BUFFER + name)[:, 0] = b.reshape(-1).float()
        for p in template.parameters():
            p.requires_grad_(False)  # the template only lends its structure; [E, P] holds the weights

    @torch.no_grad()
    def initialize(self, seeds: list[int], scheme: str, used=None) -> None:
        """Member e is the module `make` builds after seeding with seeds[e] (`seeded`), as PyTorch would build it alone:
        every initialization its class or package defines is kept. model.init=glorot/he redraws with runner's rule
        instead, and so does a population without `make` (runner's own modules)."""
        if self.make is None or scheme != "default":
            super().initialize(seeds, scheme, used)
            if self.make is None or not self.buffers:
                return
        assert len(seeds) == self.n_members
        self.noise = MemberNoise(seeds, self.flat.device)
        for e, seed in enumerate(seeds):
            with seeded(int(seed)):
                built = self.make()
            if scheme == "default":
                params = dict(built.named_parameters())
                for name, slot in self.slots.items():
                    self.flat[e, slot.offset : slot.offset + slot.size] = params[name.removeprefix("norm:")].flatten()
            buffers = dict(built.named_buffers())
            for name in self.buffers:  # its buffers too, whichever rule drew the weights
                self.stat(BUFFER + name)[e, 0] = buffers[name].reshape(-1).float()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, ...] -> [E, B, d_out], member e run with row e of the parameters."""
        self.set_modes()
        params = {name.removeprefix("norm:"): self.view(name) for name in self.slots}
        return self.run_members(lambda p, rows: self.bound(p, rows), params, [x], mask)

    def bound(self, params: dict[str, torch.Tensor], *args):
        """The template's forward with `params` in place of its parameters (torch.func.functional_call's effect,
        without its per-call search for tied and renamed tensors: the owners are found once)."""
        if self._owners is None:
            canonical = {id(p): name for name, p in self.template.named_parameters()}
            self._owners = [(self.template.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2],
                             canonical[id(p)]) for name, p in self.template.named_parameters(remove_duplicate=False)]
        saved = [(module, attr, module._parameters[attr]) for module, attr, _ in self._owners]
        given = self._bind_buffers()
        try:
            for module, attr, name in self._owners:
                module._parameters[attr] = params[name]
            return self.template(*args)
        finally:
            for module, attr, original in saved:
                module._parameters[attr] = original
            self._keep_buffers(given)

    def _bind_buffers(self) -> list:
        """The running member's own buffers in place of the template's: views of its statistics (a copy where the
        buffer's type is not float32). Returns what `_keep_buffers` needs."""
        if not self.buffers:
            return []
        if self._buffer_owners is None:
            self._buffer_owners = [(self.template.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2],
                                    name) for name in self.buffers]
        stats = _member.get()[3]
        given = []
        for module, attr, name in self._buffer_owners:
            row = stats[BUFFER + name]
            shape, dtype = self.buffers[name]
            value = row.view(shape) if dtype == row.dtype else row.view(shape).to(dtype)
            given.append((module, attr, row, value, module._buffers[attr]))
            module._buffers[attr] = value
        return given

    @staticmethod
    def _keep_buffers(given: list) -> None:
        """A buffer the forward replaced (self.b = ...) or changed in a copy goes back to the member's statistics;
        the template's own come back."""
        for module, attr, row, value, original in given:
            now = module._buffers[attr]
            if now is not value or now.dtype != row.dtype:
                with torch.no_grad():
                    row.copy_(now.detach().reshape(-1).to(row.dtype))
            module._buffers[attr] = original

    def train(self, mode: bool = True):
        self._modes = None  # nn.Module.train sets every template layer too: set_modes walks them again
        return super().train(mode)

    def set_modes(self) -> None:
        """The template's layers in the population's mode; dropout also on for test-time dropout passes, batch
        norm not. Walked only when the mode changes (the walk was 5% of a small module's step)."""
        if self._modes == (self.training, self.sampling):
            return
        self._modes = (self.training, self.sampling)
        self.template.train(self.training)
        for module in self.template.modules():
            if isinstance(module, Dropout):
                module.train(self.training or self.sampling)
        for module in self.norms:
            module.train(self.training)

    def run_members(self, fn, params: dict, inputs: list[torch.Tensor], mask: torch.Tensor | None):
        """vmap of fn(member's params, *member's inputs) over the members, each run with its own random stream,
        row mask and running statistics; `inputs` are [E, B, ...]."""
        step, stats = self.step.key, self.step_stats()
        if mask is None:
            mask = torch.ones(inputs[0].shape[:2], device=inputs[0].device)

        def one(p, key, member_mask, member_stats, *member_inputs):
            token = _member.set((key, step, member_mask, member_stats, self.noise))
            try:
                with Layers():
                    return fn(p, *member_inputs)
            finally:
                _member.reset(token)

        out = vmap(one)(params, self.noise.keys, mask, stats, *inputs)
        self.keep_stats(stats)
        return out

    def step_stats(self) -> dict[str, torch.Tensor]:
        """The running statistics a forward updates, [E, width] each: the population's own, or copies where some
        members sit this step out (`keep_stats` then takes only the others' updates)."""
        stats = {name: self.stat(name).squeeze(1) for name in self.stat_slots}
        if self.training and self.updating is not None:
            stats = {name: s.clone() for name, s in stats.items()}
        return stats

    def keep_stats(self, stats: dict[str, torch.Tensor]) -> None:
        """The updated statistics of the members that stepped, from `step_stats`'s copies."""
        if self.training and self.updating is not None and self.stat_slots:
            with torch.no_grad():
                for name, updated in stats.items():
                    kept = self.stat(name).squeeze(1)
                    kept.copy_(torch.where(self.updating.view(-1, 1), updated, kept))

    def macs_per_row(self) -> int:
        return self.size


def _module_of(root: nn.Module, parameter: str) -> nn.Module:
    return root.get_submodule(parameter.rsplit(".", 1)[0]) if "." in parameter else root
