"""The stacked multilayer perceptron: dense layers as batched matmuls over the member axis."""

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


class MLP(Population):
    """inputs -> [Dense -> activation -> dropout] x len(hidden) -> Dense head, for E members."""

    def __init__(self, cfg: ModelConfig, members: int, d_in: int, d_out: int):
        super().__init__(members)
        widths = [d_in, *cfg.hidden, d_out]
        self.depth = len(widths) - 1
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            self.add(f"dense{i}.weight", (a, b), kernel=True, fan_in=a, fan_out=b)
            self.add(f"dense{i}.bias", (1, b), kernel=False, fan_in=a, fan_out=b)
        self.allocate()
        self.activation = ACTIVATIONS[name_of(cfg.activation)]
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [E, B, d_in] -> [E, B, d_out] (logits or regression outputs)."""
        for i in range(self.depth):
            x = torch.baddbmm(self.view(f"dense{i}.bias"), x, self.view(f"dense{i}.weight"))
            if i < self.depth - 1:
                x = self.activation(x)
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
        return x
