"""model=cnn_vmap: the CNN written as an ordinary nn.Module, trained as a population through the generic vmap path."""

from torch import nn

from runner.config.schema import ModelConfig, name_of
from runner.models.functional import Dropout, FunctionalPopulation


class ConvNet(nn.Module):
    """Per entry of `channels`: conv k×k ('same'), [group norm], ReLU, 2×2 pool; global average pool, dropout, head."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], d_out: int):
        super().__init__()
        layers, channels, side = [], input_shape[0], min(input_shape[1:])
        pool = nn.MaxPool2d if name_of(cfg.pool) == "max" else nn.AvgPool2d
        for width in cfg.channels:
            norm = name_of(cfg.norm) == "group"
            layers.append(nn.Conv2d(channels, width, cfg.kernel, padding=cfg.kernel // 2, bias=not norm))
            layers += [nn.GroupNorm(cfg.groups, width)] if norm else []
            layers.append(nn.ReLU())
            if side >= 2:
                layers.append(pool(2))
                side //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.dropout = Dropout(cfg.dropout)
        self.head = nn.Linear(channels, d_out)

    def forward(self, x):
        return self.head(self.dropout(self.features(x).mean((-2, -1))))


def build(cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int) -> FunctionalPopulation:
    return FunctionalPopulation(ConvNet(cfg, input_shape, d_out), members, d_out)
