"""The population training loop: every member steps in lockstep over its own shuffled rows."""

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from runner.config import Config, name_of
from runner.engine import losses
from runner.engine.early_stopping import LOWER_IS_BETTER, EarlyStopping
from runner.engine.optim import StackedOptimizer
from runner.engine.schedules import Schedule
from runner.models import Population


@dataclass
class PopulationData:
    """Each member's features and targets on one device, and the rows it trains and validates on."""

    X: torch.Tensor  # [E, n, d]
    y: torch.Tensor  # [E, n]
    train: list[np.ndarray]
    val: list[np.ndarray]
    seeds: list[int]
    y_scale: torch.Tensor  # [E]: regression errors back in target units
    weight: Optional[torch.Tensor] = None  # [E, n] row weights (class and sample weights); None: all 1


@dataclass
class FitResult:
    """What training leaves behind: per-epoch history and the best and last parameters."""

    history: dict[str, np.ndarray]  # name -> [epochs, E], NaN where a member was not training
    epochs_run: np.ndarray  # [E]
    best_epoch: np.ndarray  # [E], -1 without validation
    best: torch.Tensor  # [E, P]
    last: torch.Tensor  # [E, P]
    best_stats: torch.Tensor  # [E, Q] running statistics (batch norm) that go with `best`
    last_stats: torch.Tensor
    train_s: float


def padded(rows: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index [E, m] (row 0 as filler) and weight mask [E, m] for ragged per-member row lists."""
    m = max(1, max(len(r) for r in rows))
    idx = np.zeros((len(rows), m), dtype=np.int64)
    mask = np.zeros((len(rows), m), dtype=np.float32)
    for e, r in enumerate(rows):
        idx[e, : len(r)] = r
        mask[e, : len(r)] = 1.0
    return torch.from_numpy(idx).to(device), torch.from_numpy(mask).to(device)


def fit(
    model: Population,
    data: PopulationData,
    cfg: Config,
    loss: str,
    on_epoch: Optional[Callable[[int, int], None]] = None,
    epoch_budget: Optional[np.ndarray] = None,
) -> FitResult:
    """Train every member of `model` on its own rows; returns history and best/last weights.

    `epoch_budget` [E] stops each member after that many epochs (refit on train + val).
    """
    start = time.perf_counter()
    trainer, es = cfg.trainer, cfg.trainer.early_stopping
    device, E = model.flat.device, model.members
    n_train = np.array([len(r) for r in data.train])
    batch = int(n_train.max()) if trainer.batch_size == "full" else int(trainer.batch_size)
    steps = int(np.ceil(n_train.max() / batch))
    rngs = [np.random.default_rng(s) for s in data.seeds]
    members = torch.arange(E, device=device).unsqueeze(1)
    row_weight = data.weight if data.weight is not None else torch.ones_like(data.y)
    criterion = losses.Criterion(loss, cfg.loss, device)
    penalty = losses.Penalty(cfg.reg, model.kernel_mask().to(device))

    has_val = any(len(v) for v in data.val)
    if has_val:
        val_idx, val_mask = padded(data.val, device)
        Xv, yv, wv = data.X[members, val_idx], data.y[members, val_idx], val_mask * row_weight[members, val_idx]

    opt = StackedOptimizer(model.flat, cfg.optim)
    schedule = Schedule(cfg.sched, cfg.optim.lr, trainer.epochs, E, device)
    stopper = EarlyStopping(model, es)
    metric = "val/rmse" if loss == "mse" else "val/accuracy"
    names = ["train/loss", "lr"] + (["val/loss", metric] if has_val else [])
    hist = {k: torch.full((trainer.epochs, E), float("nan"), device=device) for k in names}

    for epoch in range(trainer.epochs):
        active = stopper.active
        if schedule.kind != "plateau":
            opt.lr.fill_(schedule.lr(epoch))
        idx, mask = _epoch_batches(data.train, rngs, steps, batch, device)
        stepping = (mask.sum(-1) > 0).T & active  # [steps, E]
        total, seen = torch.zeros(E, device=device), torch.zeros(E, device=device)
        model.train()
        for s in range(steps):
            ib = idx[:, s]
            wb = mask[:, s] * row_weight[members, ib]
            model.updating = stepping[s]
            per_row = criterion(model(data.X[members, ib], mask[:, s]), data.y[members, ib]) * wb
            member_loss = per_row.sum(1) / wb.sum(1).clamp(min=1e-12)
            model.flat.grad = None
            (member_loss + penalty(model.flat)).sum().backward()
            _clip(model.flat.grad, trainer.grad_clip)
            opt.step(stepping[s])
            total += per_row.detach().sum(1)
            seen += wb.sum(1)
        hist["train/loss"][epoch] = torch.where(active, total / seen.clamp(min=1e-12), torch.nan)
        hist["lr"][epoch] = torch.where(active, opt.lr, torch.nan)
        if has_val:
            val = _validate(model, Xv, yv, wv, criterion, metric, data.y_scale)
            for k, v in val.items():
                hist[k][epoch] = torch.where(active, v, torch.nan)
            stopper.update(epoch, val[es.monitor], active)
            if schedule.kind == "plateau":
                monitored = cfg.sched.monitor
                opt.lr = schedule.plateau(opt.lr, val[monitored], monitored in LOWER_IS_BETTER, active)
        stopper.count(active)
        if epoch_budget is not None:
            stopper.active = stopper.active & torch.as_tensor(epoch_budget > epoch + 1, device=device)
        n_active = int(stopper.active.sum())
        if on_epoch is not None:
            on_epoch(epoch, n_active)
        if n_active == 0:
            break

    model.updating = None
    last = model.flat.detach().clone()
    return FitResult(
        history={k: v[: epoch + 1].cpu().numpy() for k, v in hist.items()},
        epochs_run=stopper.epochs_run.cpu().numpy().astype(int),
        best_epoch=stopper.best_epoch.cpu().numpy().astype(int),
        best=stopper.best_params.clone() if has_val else last,
        last=last,
        best_stats=stopper.best_stats.clone() if has_val else model.stats.clone(),
        last_stats=model.stats.clone(),
        train_s=time.perf_counter() - start,
    )


def _clip(grad: torch.Tensor, clip) -> None:
    # Per member: each row of the [E, P] gradient is one member's whole gradient.
    if clip.value is not None:
        grad.clamp_(-clip.value, clip.value)
    if clip.norm is not None:
        norm = grad.norm(dim=1, keepdim=True)
        grad.mul_((clip.norm / (norm + 1e-6)).clamp(max=1.0))


def _epoch_batches(train: list[np.ndarray], rngs, steps: int, batch: int, device):
    """This epoch's shuffled rows per member as [E, steps, batch] indices and 0/1 masks."""
    E = len(train)
    idx = np.zeros((E, steps * batch), dtype=np.int64)
    mask = np.zeros((E, steps * batch), dtype=np.float32)
    for e, (rows, rng) in enumerate(zip(train, rngs)):
        idx[e, : len(rows)] = rows[rng.permutation(len(rows))]
        mask[e, : len(rows)] = 1.0
    shape = (E, steps, batch)
    return torch.from_numpy(idx).view(shape).to(device), torch.from_numpy(mask).view(shape).to(device)


@torch.no_grad()
def _validate(model, Xv, yv, wv, criterion, metric, y_scale) -> dict[str, torch.Tensor]:
    """Validation loss and task metric for all members in one batched pass."""
    model.eval()
    out = model(Xv)
    n = wv.sum(1).clamp(min=1e-12)
    result = {"val/loss": (criterion(out, yv, smoothing=False) * wv).sum(1) / n}
    if metric == "val/rmse":
        result[metric] = ((out.squeeze(-1) - yv) ** 2 * wv).sum(1).div(n).sqrt() * y_scale
    else:
        pred = (out.squeeze(-1) > 0).float() if out.shape[-1] == 1 else out.argmax(-1).float()
        result[metric] = ((pred == yv).float() * wv).sum(1) / n
    return result
