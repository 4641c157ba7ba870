"""A user's own package, outside src/: the networks and data loaders the model=module tests and the population
contract train by name (model.target=usernets:Net, dataset.loader=usernets:table)."""

import numpy as np
import pandas as pd
import torch
from torch import nn


def table(n=200, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def frame(n=120):
    g = np.random.default_rng(1)
    x = g.normal(size=n)
    return pd.DataFrame({"x": x, "color": g.choice(["red", "blue"], n), "label": np.where(x > 0, "yes", "no")})


def pictures(n=60):
    g = np.random.default_rng(2)
    y = g.integers(0, 3, n)
    return (g.random((n, 6, 6, 1)) * 200 + y[:, None, None, None] * 20).astype(np.uint8), y


class Net(nn.Module):
    """A user's network: flatten, dense, ReLU, torch's own dropout, dense."""

    def __init__(self, input_shape, out_features, width=16, p=0.3):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.ReLU(), nn.Dropout(p),
                                  nn.Linear(width, out_features))

    def forward(self, x):
        return self.body(x)


class Fixed(nn.Module):
    """Takes no shapes: only its own args."""

    def __init__(self, inputs, outputs):
        super().__init__()
        self.layer = nn.Linear(inputs, outputs)

    def forward(self, x):
        return self.layer(x)


class Normed(nn.Module):
    """Dense -> BatchNorm1d -> ReLU -> Dropout -> dense."""

    def __init__(self, input_shape, out_features, width=8):
        super().__init__()
        # No bias before batch norm: its gradient is zero but for rounding, which Adam would amplify.
        self.body = nn.Sequential(nn.Linear(input_shape[0], width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.Dropout(0.3), nn.Linear(width, out_features))

    def forward(self, x):
        return self.body(x)


class Stateful(nn.Module):
    """Buffers of its own: a projection drawn in __init__ (each member's from its seed) and a count its forward
    updates in training; batch norm beside them (averaged weights recompute its statistics, not the buffers)."""

    def __init__(self, input_shape, out_features, width=8):
        super().__init__()
        self.register_buffer("projection", torch.randn(input_shape[0], width) / input_shape[0] ** 0.5)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.body = nn.Sequential(nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.Linear(width, out_features))

    def forward(self, x):
        if self.training:
            self.steps += 1
        return self.body(x @ self.projection) * (1 + 0.01 * self.steps)


class Sometimes(nn.Module):
    """A layer its forward calls every other training step (a count in a buffer): torch.optim counts that layer's
    Adam steps apart from the others', and the members train in turn (the forward branches on a value)."""

    def __init__(self, input_shape, out_features, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, out_features))
        self.aux = nn.Linear(input_shape[0], out_features)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.body(x)
        return out + self.aux(x) if self.calls % 2 == 1 else out


class DropPath(nn.Module):
    """timm's drop path (stochastic depth): a whole row's branch dropped, drawn from torch's generator."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Noisy(nn.Module):
    """Random numbers of its own in training: Gaussian noise on a hidden layer and a drop-path residual branch."""

    def __init__(self, input_shape, out_features, width=8):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(input_shape[0], width), nn.Linear(width, width), nn.Linear(width, out_features)
        self.drop_path = DropPath(0.3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.training:
            h = h + 0.1 * torch.randn_like(h)
        return self.head(h + self.drop_path(self.b(h)))


class ConvNet(nn.Module):
    """A user's CNN as an nn.Sequential: conv, BatchNorm2d, ReLU, max pool, dropout, global mean, dense."""

    def __init__(self, input_shape, out_features, channels=4):
        super().__init__()
        # No conv bias before batch norm: its gradient is zero but for rounding, which Adam would amplify.
        self.body = nn.Sequential(nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, out_features))

    def forward(self, x):
        return self.body(x)


class Residual(nn.Module):
    """conv -> ReLU, a residual block (with batch norm and dropout), pool, dense: the add runs stacked too."""

    def __init__(self, input_shape, out_features, width=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Dropout(0.2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, out_features))

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.block(x))


class Pooled(nn.Module):
    """GroupNorm, a channel concatenation, a mean over pixels and LayerNorm (all stacked), and PReLU, which
    runner does not stack: it runs through vmap with its own parameter."""

    def __init__(self, input_shape, out_features, width=4):
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.act = nn.PReLU(width)
        self.head = nn.Sequential(nn.LayerNorm(2 * width), nn.Linear(2 * width, out_features))

    def forward(self, x):
        x = self.act(self.norm(self.conv(x)))
        return self.head(torch.cat([x, x * x], 1).mean((-2, -1)))


class Sized(nn.Module):
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.layer = nn.Linear(36, out_features)

    def forward(self, x):
        return self.layer(x.view(x.size(0), -1))


class Tutorial(nn.Module):  # conv, dropout, batch norm, pool, then x.view(x.size(0), -1): the generic vmap path
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool, self.drop, self.head = nn.MaxPool2d(2), nn.Dropout(0.3), nn.Linear(4 * 9 + 4 * 36, out_features)

    def forward(self, x):
        x = self.conv(x)
        pooled = self.pool(torch.relu(self.norm(self.drop(x))))  # dropout before batch norm: it moves the statistics
        return self.head(torch.cat([pooled.view(x.size(0), -1), x.view(x.size(0), -1)], 1))


class Moody(nn.Module):
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.layer = nn.Linear(input_shape[0], out_features)

    def forward(self, x):
        return self.layer(x + 0.1 if self.training else x)


class Branchy(nn.Module):
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.layer = nn.Linear(input_shape[0], out_features)

    def forward(self, x):
        return self.layer(x) if x.sum() > 0 else -self.layer(x)


class Guarded(nn.Module):
    """A branch on its values that each row takes alike (vmap refuses the branch, the rows stay apart)."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.layer = nn.Linear(input_shape[0], out_features)

    def forward(self, x):
        if torch.isnan(x).any():
            x = torch.nan_to_num(x)
        return self.layer(x)


class Channelwise(nn.Module):
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.drop, self.layer = nn.Dropout1d(0.2), nn.Linear(input_shape[0], out_features)

    def forward(self, x):
        return self.layer(self.drop(x))
