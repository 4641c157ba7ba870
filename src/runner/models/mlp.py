"""The stacked multilayer perceptron: dense layers as batched matmuls over the member axis."""

import math

import torch
import torch.nn.functional as F

from runner.config import ModelConfig, name_of
from runner.models.stacked import Population

ACTIVATIONS = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
}


def dropout(x: torch.Tensor, p: float, noise, stream: int) -> torch.Tensor:
    """Inverted dropout of x [E, B, ...] with each member's own masks (zero with probability p, scale 1/(1-p))."""
    keep = noise.uniform(tuple(x.shape[1:]), stream) >= p
    return x * keep * (1.0 / (1.0 - p))


class MLP(Population):
    """inputs -> [Dense -> activation -> dropout] x len(hidden) -> Dense head, for E members."""

    def __init__(self, cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int):
        super().__init__(members)
        widths = [math.prod(input_shape), *cfg.hidden, d_out]
        self.depth = len(widths) - 1
        self.norm = name_of(cfg.norm)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            self.add(f"dense{i}.weight", (a, b), kernel=True, fan_in=a, fan_out=b, reads_inputs=i == 0)
            # Batch norm subtracts the batch mean, so a bias before it has a zero gradient (in exact
            # arithmetic; in floats, noise that Adam would amplify into lr-sized steps): it has none.
            if self.norm != "batch" or i == self.depth - 1:
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
                x = self.activation(x)
                if self.dropout > 0 and self.training:
                    x = dropout(x, self.dropout, self.noise, stream=i)
        return x

    def _batch_norm(self, x: torch.Tensor, i: int, mask: torch.Tensor | None) -> torch.Tensor:
        # Statistics over each member's own real rows (padding excluded), as BatchNorm1d per member.
        mean_run, var_run = self.stat(f"norm{i}.mean"), self.stat(f"norm{i}.var")
        if self.training:
            w = torch.ones_like(x[..., :1]) if mask is None else mask.unsqueeze(-1)
            n = w.sum(1, keepdim=True)
            mean = (x * w).sum(1, keepdim=True) / n.clamp(min=1)
            var = ((x - mean) ** 2 * w).sum(1, keepdim=True) / n.clamp(min=1)
            with torch.no_grad():
                keep = n > 1
                if self.updating is not None:
                    keep = keep & self.updating.view(-1, 1, 1)
                unbiased = var * n / (n - 1).clamp(min=1)
                mean_run.copy_(torch.where(keep, 0.9 * mean_run + 0.1 * mean, mean_run))
                var_run.copy_(torch.where(keep, 0.9 * var_run + 0.1 * unbiased, var_run))
        else:
            mean, var = mean_run, var_run
        x = (x - mean) / torch.sqrt(var + 1e-5)
        return x * self.view(f"norm{i}.weight") + self.view(f"norm{i}.bias")
