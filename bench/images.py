"""The digits-CNN workload: runner's stacked CNN (grouped convolutions) and generic vmap path against a plain loop."""

import math
import time

import numpy as np
import torch
from torch import nn

from runner.data import preprocess
from runner.engine.loop import fit
from runner.engine.predict import member_outputs
from runner.study import plan, population

DIGITS_CNN = ["dataset=digits", "eval=kfold", "eval.k=5", "trainer.seeds=2", "trainer.epochs=20", "trainer.batch_size=64",
              "trainer.progress=false"]


def digits_study(compose, model: str = "cnn", overrides: list[str] = ()):
    """The digits 5-fold x 2-seed study (CNN [16, 32]) as `runner train` plans it, and its fitted preprocessing."""
    study = plan(compose([*DIGITS_CNN, f"model={model}", "model.channels=[16,32]", *overrides]))
    return study, preprocess(study.dataset, study.members)


def runner_fit(study, pre) -> tuple[float, float, list[float]]:
    """Seconds of one `fit` of the whole population, and each member's test accuracy with its kept weights."""
    model, data = population(study, study.members, pre)
    start = time.perf_counter()
    result = fit(model, data, study.cfg, study.loss)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        model.flat.copy_(result.best)
        model.stats.copy_(result.best_stats)
    proba = member_outputs(model, data.inputs, [m.test for m in study.members], study.loss)
    accs = [float((proba[e, : len(m.test)].argmax(1) == study.dataset.y[m.test]).mean())
            for e, m in enumerate(study.members)]
    return seconds, float(np.mean(accs)), accs


def plain_cnn(channels: list[int], classes: int, c: int = 1) -> nn.Module:
    """What a user writes: conv 3x3 -> ReLU -> 2x2 max-pool per block, global average pool, linear head."""
    layers = []
    for width in channels:
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def plain_loop(study, pre, build=None, device="cpu") -> tuple[float, float, list[float]]:
    """The same 10 models one at a time: Adam, CE, shuffled batches, per-epoch validation, early stopping;
    `build(classes)` makes each model (default: `plain_cnn` of the study's channels)."""
    c = study.cfg
    classes = len(study.dataset.classes)
    build = build or (lambda k: plain_cnn(list(c.model.channels), k))
    data = [(torch.from_numpy(pre.transform(e)).to(device), torch.from_numpy(study.dataset.y).to(device))
            for e in range(len(study.members))]
    start = time.perf_counter()
    accs = []
    for e, m in enumerate(study.members):
        X, y = data[e]
        torch.manual_seed(m.seed)
        net = build(classes).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=c.optim.lr)
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(m.seed)
        best, best_state, wait = math.inf, None, 0
        train, val = torch.from_numpy(m.train).to(device), torch.from_numpy(m.val).to(device)
        for _ in range(c.trainer.epochs):
            net.train()
            order = train[torch.from_numpy(rng.permutation(len(train))).to(device)]
            for i in range(0, len(order), c.trainer.batch_size):
                rows = order[i : i + c.trainer.batch_size]
                if len(rows) < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
                    continue  # torch's batch norm refuses one row; a user would drop it (DataLoader's drop_last)
                opt.zero_grad()
                loss_fn(net(X[rows]), y[rows]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val_loss = loss_fn(net(X[val]), y[val]).item()
            if val_loss < best:
                best, wait = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                wait += 1
                if wait >= c.trainer.early_stopping.patience:
                    break
        net.load_state_dict(best_state)
        with torch.no_grad():
            test = torch.from_numpy(m.test).to(device)
            accs.append(float((net(X[test]).argmax(1) == y[test]).float().mean()))
    return time.perf_counter() - start, float(np.mean(accs)), accs


def interval(accs: list[float]) -> tuple[float, float]:
    """Mean ± 1.96·SE over the members' test accuracies."""
    a = np.asarray(accs)
    half = 1.96 * a.std(ddof=1) / math.sqrt(len(a))
    return float(a.mean() - half), float(a.mean() + half)


class UserCNN(nn.Sequential):
    """The user's CNN for model=module: `plain_cnn` as an nn.Sequential class runner builds (stacked fast path)."""

    def __init__(self, input_shape, out_features, channels=(16, 32)):
        super().__init__(*plain_cnn(list(channels), out_features, input_shape[0]))


class Residual(nn.Module):
    """A user's CNN with a residual block: model=module runs its add stacked too."""

    def __init__(self, input_shape, out_features, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1))
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, out_features))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


class GroupNormed(nn.Module):
    """A user's CNN with layers runner does not stack (GroupNorm, a mean over pixels): those run through vmap."""

    def __init__(self, input_shape, out_features, channels=(16, 32)):
        super().__init__()
        layers, c = [], input_shape[0]
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(), nn.MaxPool2d(2)]
            c = width
        self.features, self.head = nn.Sequential(*layers), nn.Linear(c, out_features)

    def forward(self, x):
        return self.head(self.features(x).mean((-2, -1)))
