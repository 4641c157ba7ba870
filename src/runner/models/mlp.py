"""The stacked multilayer perceptron: dense layers as batched matmuls over the member axis."""

import math

import torch
import torch.nn.functional as F

from runner.config.schema import ModelConfig, name_of
from runner.models.layers import batch_norm, dropout
from runner.models.stacked import Population

ACTIVATIONS = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
}


class MLP(Population):
    """inputs -> [Dense -> activation -> dropout] x len(hidden) -> Dense head, for E members."""

    def __init__(self, cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int):
        super().__init__(members)
        self.outputs = d_out
        widths = [math.prod(input_shape), *cfg.hidden, d_out]
        self.depth = len(widths) - 1
        self.norm, self.groups = name_of(cfg.norm), cfg.groups
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            self.add(f"dense{i}.weight", (a, b), kernel=True, fan_in=a, fan_out=b, reads_inputs=i == 0)
            # Batch and group norm subtract a mean, so a bias before them has a zero gradient (in exact
            # arithmetic; in floats, noise that Adam would amplify into lr-sized steps): it has none.
            if self.norm not in ("batch", "group") or i == self.depth - 1:
                self.add(f"dense{i}.bias", (1, b), kernel=False, fan_in=a, fan_out=b, reads_inputs=i == 0)
            if self.norm != "none" and i < self.depth - 1:
                self.add(f"norm{i}.weight", (1, b), kernel=False, fan_in=0, fan_out=b)
                self.add(f"norm{i}.bias", (1, b), kernel=False, fan_in=0, fan_out=b)
                if self.norm == "batch":
                    self.add_stat(f"norm{i}.mean", b, 0.0)
                    self.add_stat(f"norm{i}.var", b, 1.0)
        self.allocate()
        self.activation = ACTIVATIONS[name_of(cfg.activation)]
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, d_in] (or [E, B, *shape], flattened) -> [E, B, d_out] (logits or regression outputs);
        mask [E, B] marks real rows."""
        if x.dim() > 3:
            x = x.flatten(2)
        for i in range(self.depth):
            bias = f"dense{i}.bias"
            w = self.view(f"dense{i}.weight")
            x = torch.baddbmm(self.view(bias), x, w) if bias in self.slots else torch.bmm(x, w)
            if i < self.depth - 1:
                if self.norm == "layer":
                    x = F.layer_norm(x, x.shape[-1:]) * self.view(f"norm{i}.weight") + self.view(f"norm{i}.bias")
                elif self.norm == "batch":
                    x = self._batch_norm(x, i, mask)
                elif self.norm == "group":
                    x = F.group_norm(x.reshape(-1, x.shape[-1]), self.groups).view_as(x)
                    x = x * self.view(f"norm{i}.weight") + self.view(f"norm{i}.bias")
                x = self.activation(x)
                if self.dropout > 0 and (self.training or self.sampling):
                    x = dropout(x, self.dropout, self.noise, stream=i)
        return x

    def _batch_norm(self, x: torch.Tensor, i: int, mask: torch.Tensor | None) -> torch.Tensor:
        # Statistics over each member's own real rows (padding excluded), as BatchNorm1d per member.
        updating = None if self.updating is None else self.updating.view(-1, 1, 1)
        x = batch_norm(x, None if mask is None else mask.unsqueeze(-1), (1,), self.stat(f"norm{i}.mean"),
                       self.stat(f"norm{i}.var"), updating, self.training)
        return x * self.view(f"norm{i}.weight") + self.view(f"norm{i}.bias")
