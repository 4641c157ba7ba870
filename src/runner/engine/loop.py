"""The population training loop: every member steps in lockstep over its own shuffled rows."""

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from runner.config import OptimConfig, TrainerConfig, name_of
from runner.engine import losses
from runner.engine.early_stopping import EarlyStopping
from runner.engine.optim import StackedOptimizer
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


@dataclass
class FitResult:
    """What training leaves behind: per-epoch history and the best and last parameters."""

    history: dict[str, np.ndarray]  # name -> [epochs, E], NaN where a member was not training
    epochs_run: np.ndarray  # [E]
    best_epoch: np.ndarray  # [E], -1 without validation
    best: torch.Tensor  # [E, P]
    last: torch.Tensor  # [E, P]
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
    trainer: TrainerConfig,
    optim: OptimConfig,
    loss: str,
    label_smoothing: float = 0.0,
    on_epoch: Optional[Callable[[int, int], None]] = None,
) -> FitResult:
    """Train every member of `model` on its own rows; returns history and best/last weights."""
    start = time.perf_counter()
    device = model.flat.device
    E = model.members
    n_train = np.array([len(r) for r in data.train])
    batch = int(n_train.max()) if trainer.batch_size == "full" else int(trainer.batch_size)
    steps = int(np.ceil(n_train.max() / batch))
    rngs = [np.random.default_rng(s) for s in data.seeds]
    members = torch.arange(E, device=device).unsqueeze(1)

    has_val = any(len(v) for v in data.val)
    if has_val:
        val_idx, val_w = padded(data.val, device)
        Xv, yv = data.X[members, val_idx], data.y[members, val_idx]
    task_metric = "rmse" if loss == "mse" else "accuracy"

    opt = StackedOptimizer(model.flat, optim)
    es = trainer.early_stopping
    stopper = EarlyStopping(model.flat, es.monitor, name_of(es.mode), es.patience, es.min_delta)
    names = ["train/loss", "lr"] + (["val/loss", f"val/{task_metric}"] if has_val else [])
    hist = {k: torch.full((trainer.epochs, E), float("nan"), device=device) for k in names}
    n_train_t = torch.as_tensor(n_train, dtype=torch.float32, device=device)

    for epoch in range(trainer.epochs):
        active = stopper.active
        idx, w = _epoch_batches(data.train, rngs, steps, batch, device)
        stepping = (w.sum(-1) > 0).T & active  # [steps, E]
        total = torch.zeros(E, device=device)
        model.train()
        for s in range(steps):
            ib, wb = idx[:, s], w[:, s]
            out = model(data.X[members, ib])
            per_row = losses.per_example(loss, out, data.y[members, ib], label_smoothing) * wb
            model.flat.grad = None
            (per_row.sum(1) / wb.sum(1).clamp(min=1)).sum().backward()
            opt.step(stepping[s])
            total += per_row.detach().sum(1)
        ran = active.float()
        hist["train/loss"][epoch] = torch.where(active, total / n_train_t, torch.nan)
        hist["lr"][epoch] = torch.where(active, opt.lr, torch.nan)
        if has_val:
            val = _validate(model, Xv, yv, val_w, loss, data.y_scale)
            for k, v in val.items():
                hist[k][epoch] = torch.where(active, v, torch.nan)
            stopper.update(epoch, val[es.monitor], active)
        stopper.count(ran)
        n_active = int(stopper.active.sum())
        if on_epoch is not None:
            on_epoch(epoch, n_active)
        if n_active == 0:
            break

    last = model.flat.detach().clone()
    best = stopper.best_params if has_val else last
    return FitResult(
        history={k: v[: epoch + 1].cpu().numpy() for k, v in hist.items()},
        epochs_run=stopper.epochs_run.cpu().numpy().astype(int),
        best_epoch=stopper.best_epoch.cpu().numpy().astype(int),
        best=best.clone(),
        last=last,
        train_s=time.perf_counter() - start,
    )


def _epoch_batches(train: list[np.ndarray], rngs, steps: int, batch: int, device):
    """This epoch's shuffled rows per member as [E, steps, batch] indices and weights."""
    E = len(train)
    idx = np.zeros((E, steps * batch), dtype=np.int64)
    w = np.zeros((E, steps * batch), dtype=np.float32)
    for e, (rows, rng) in enumerate(zip(train, rngs)):
        idx[e, : len(rows)] = rows[rng.permutation(len(rows))]
        w[e, : len(rows)] = 1.0
    shape = (E, steps, batch)
    return torch.from_numpy(idx).view(shape).to(device), torch.from_numpy(w).view(shape).to(device)


@torch.no_grad()
def _validate(model, Xv, yv, wv, loss, y_scale) -> dict[str, torch.Tensor]:
    """Validation loss and task metric for all members in one batched pass."""
    model.eval()
    out = model(Xv)
    n = wv.sum(1).clamp(min=1)
    result = {"val/loss": (losses.per_example(loss, out, yv) * wv).sum(1) / n}
    if loss == "mse":
        result["val/rmse"] = ((out.squeeze(-1) - yv) ** 2 * wv).sum(1).div(n).sqrt() * y_scale
    else:
        pred = (out.squeeze(-1) > 0).float() if loss == "bce" else out.argmax(-1).float()
        result["val/accuracy"] = ((pred == yv).float() * wv).sum(1) / n
    return result
