"""Any ordinary nn.Module as a population: its parameters are the rows of [E, P], run with vmap(functional_call).

A new model is one module file (an ordinary `nn.Module` built from a ModelConfig and the input shape) plus one
YAML; `register` puts it in the model registry. Dropout inside such a module must be this file's `Dropout`,
which draws each member's masks from its own stream (torch's dropout would share one generator).
"""

import contextvars
import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from runner.errors import RunnerError
from runner.models.noise import _GOLDEN, _shr, mix
from runner.models.stacked import Population

_member = contextvars.ContextVar("member")  # (key, step) of the member being run inside vmap


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from the running member's own counter-based stream."""

    def __init__(self, p: float, stream: int = 0):
        super().__init__()
        self.p, self.stream = p, stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        key, step = _member.get()
        base = mix(key + mix(torch.tensor(step * 1024 + self.stream, dtype=torch.int64) * _GOLDEN))
        position = torch.arange(x.numel(), dtype=torch.int64, device=x.device) * _GOLDEN
        u = _shr(mix(base + position), 40).float() * (1.0 / (1 << 24))  # as MemberNoise.uniform
        return x * (u.view(x.shape) >= self.p) * (1.0 / (1.0 - self.p))


class FunctionalPopulation(Population):
    """E independent copies of `template`, stacked in one [E, P] tensor and run for all members with vmap."""

    def __init__(self, template: nn.Module, members: int, d_out: int):
        super().__init__(members)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in template.modules()):
            raise RunnerError("batch norm needs per-member running statistics, which the generic (vmap) path does "
                              "not keep yet: use nn.GroupNorm or nn.LayerNorm there, or model=mlp/cnn with "
                              "model.norm=batch")
        self.template, self.outputs = template, d_out
        params = dict(template.named_parameters())
        for name, p in params.items():
            owner = params.get(name.rsplit(".", 1)[0] + ".weight", p)  # a bias's fan-in is its weight's
            fan_in = math.prod(owner.shape[1:]) if owner.dim() > 1 else 0
            fan_out = owner.shape[0] * math.prod(owner.shape[2:]) if owner.dim() > 1 else p.shape[0]
            norm = isinstance(_module_of(template, name), (nn.GroupNorm, nn.LayerNorm))
            self.add(("norm:" if norm else "") + name, tuple(p.shape), kernel=p.dim() > 1 and not norm,
                     fan_in=fan_in, fan_out=fan_out)
        self.allocate()
        for p in template.parameters():
            p.requires_grad_(False)  # the template only lends its structure; [E, P] holds the weights

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, ...] -> [E, B, d_out], member e run with row e of the parameters."""
        self.template.train(self.training)
        for module in self.template.modules():
            if isinstance(module, Dropout):
                module.train(self.training or self.sampling)
        params = {name.removeprefix("norm:"): self.view(name) for name in self.slots}
        step = self.noise.step

        def one(p, key, rows):
            token = _member.set((key, step))
            try:
                return functional_call(self.template, p, (rows,))
            finally:
                _member.reset(token)

        return vmap(one)(params, self.noise.keys, x)

    def macs_per_row(self) -> int:
        return self.size


def _module_of(root: nn.Module, parameter: str) -> nn.Module:
    return root.get_submodule(parameter.rsplit(".", 1)[0]) if "." in parameter else root
