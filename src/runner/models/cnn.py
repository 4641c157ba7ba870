"""The stacked CNN: conv blocks as one grouped convolution over the member axis, global average pooling, a dense head."""

import torch
import torch.nn.functional as F

from runner.config.schema import ModelConfig, name_of
from runner.errors import RunnerError
from runner.models.layers import dropout, grouped, grouped_batch_norm, grouped_weight
from runner.models.mlp import ACTIVATIONS
from runner.models.stacked import Population


class CNN(Population):
    """inputs [C, H, W] -> [conv k×k -> norm -> activation -> 2×2 pool] per `channels` -> global average pool
    -> dropout -> dense head, for E members.

    The E members' convolutions run as one `conv2d` with groups=E on a [B, E·C, H, W] layout: member e owns
    channels e·C..(e+1)·C-1 of every layer, so pooling and group norm apply to all members at once.
    """

    def __init__(self, cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int):
        super().__init__(members)
        self.outputs = d_out
        if len(input_shape) != 3:
            raise RunnerError(f"model=cnn needs image inputs [C, H, W]; this dataset's rows have shape "
                              f"{list(input_shape)} (use model=mlp for tables)")
        channels, k = [input_shape[0], *cfg.channels], cfg.kernel
        self.norm, self.groups, self.kernel = name_of(cfg.norm), cfg.groups, k
        self.pool = F.max_pool2d if name_of(cfg.pool) == "max" else F.avg_pool2d
        self.activation = ACTIVATIONS[name_of(cfg.activation)]
        self.pool_first = name_of(cfg.pool) == "max" and name_of(cfg.activation) != "gelu"  # gelu is not monotone
        self.dropout = cfg.dropout
        self.blocks = len(cfg.channels)
        self.macs = 0
        h, w = input_shape[1:]
        for i, (a, b) in enumerate(zip(channels[:-1], channels[1:])):
            self.add(f"conv{i}.weight", (b, a, k, k), kernel=True, fan_in=a * k * k, fan_out=b * k * k)
            if self.norm == "none":  # a norm subtracts the mean: a bias before it would only add float noise
                self.add(f"conv{i}.bias", (b,), kernel=False, fan_in=a * k * k, fan_out=b * k * k)
            if self.norm != "none":
                self.add(f"norm{i}.weight", (b,), kernel=False, fan_in=0, fan_out=b)
                self.add(f"norm{i}.bias", (b,), kernel=False, fan_in=0, fan_out=b)
                if self.norm == "batch":
                    self.add_stat(f"norm{i}.mean", b, 0.0)
                    self.add_stat(f"norm{i}.var", b, 1.0)
            self.macs += a * b * k * k * h * w
            if min(h, w) >= 2:
                h, w = h // 2, w // 2
        self.add("head.weight", (channels[-1], d_out), kernel=True, fan_in=channels[-1], fan_out=d_out)
        self.add("head.bias", (1, d_out), kernel=False, fan_in=channels[-1], fan_out=d_out)
        self.macs += channels[-1] * d_out
        self.allocate()

    def macs_per_row(self) -> int:
        return self.macs

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, C, H, W] -> [E, B, d_out]; mask [E, B] marks real rows (batch norm skips padding)."""
        E, B = x.shape[:2]
        x = grouped(x)
        for i in range(self.blocks):
            weight = grouped_weight(self.view(f"conv{i}.weight"))
            bias = self.view(f"conv{i}.bias").reshape(-1) if f"conv{i}.bias" in self.slots else None
            x = F.conv2d(x, weight, bias, padding=self.kernel // 2, groups=E)
            if self.norm != "none":
                x = self._norm(x, i, E, mask)
            pool = min(x.shape[-2:]) >= 2
            if pool and self.pool_first:  # max-pool commutes with a non-decreasing activation: 4x fewer values
                x = self.activation(self.pool(x, 2))
            else:
                x = self.activation(x)
                x = self.pool(x, 2) if pool else x
        x = x.mean((-2, -1)).view(B, E, -1).transpose(0, 1)  # global average pool: [E, B, C]
        if self.dropout > 0 and (self.training or self.sampling):
            x = dropout(x, self.dropout, self.noise, stream=0)
        return torch.baddbmm(self.view("head.bias"), x, self.view("head.weight"))

    def _norm(self, x: torch.Tensor, i: int, E: int, mask: torch.Tensor | None) -> torch.Tensor:
        EC = x.shape[1]
        if self.norm == "group":
            # E·groups groups over the member-major channels: each member's channels split into its own groups.
            x = F.group_norm(x, E * self.groups)
        else:  # batch: per member and channel, over that member's real rows and every pixel
            x = grouped_batch_norm(x, E, mask, self.stat(f"norm{i}.mean"), self.stat(f"norm{i}.var"), self.updating,
                                   self.training)
        scale = self.view(f"norm{i}.weight").reshape(1, EC, 1, 1)
        shift = self.view(f"norm{i}.bias").reshape(1, EC, 1, 1)
        return x * scale + shift
