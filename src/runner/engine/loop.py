"""The population training loop: every member steps in lockstep over its own shuffled rows."""

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from runner.config import Config
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

    Members that stop early leave the population at the end of the epoch (their results are kept
    aside), so the step costs only what the members still training need. `epoch_budget` [E] stops
    each member after that many epochs (refit on train + val).
    """
    start = time.perf_counter()
    trainer, es = cfg.trainer, cfg.trainer.early_stopping
    device, E = model.flat.device, model.members
    criterion = losses.Criterion(loss, cfg.loss, device)
    penalty = losses.Penalty(cfg.reg, model.kernel_mask().to(device))
    work = _Working(data, epoch_budget)
    batch = int(max(len(r) for r in data.train)) if trainer.batch_size == "full" else int(trainer.batch_size)
    opt = StackedOptimizer(model.flat, cfg.optim)
    schedule = Schedule(cfg.sched, cfg.optim.lr, trainer.epochs, E, device)
    stopper = EarlyStopping(model, es)
    metric = "val/rmse" if loss == "mse" else "val/accuracy"
    names = ["train/loss", "lr"] + (["val/loss", metric] if work.has_val else [])
    hist = {k: torch.full((trainer.epochs, E), float("nan"), device=device) for k in names}
    done = _Finished(model, E)
    live = torch.arange(E, device=device)  # global index of each member still in the population

    for epoch in range(trainer.epochs):
        active = stopper.active
        if schedule.kind != "plateau":
            opt.set_lr(schedule.lr(epoch))
        xs, ys, ws, masks, has_rows = work.epoch_batches(batch)
        has_rows &= active.cpu().numpy()  # [steps, E] on the host, for the fused optimizer
        stepping = torch.from_numpy(has_rows).to(device)
        denominators = ws.sum(-1).clamp(min=1e-12)  # [steps, E]
        total = torch.zeros(len(live), device=device)
        model.train()
        for s in range(len(xs)):
            model.updating = stepping[s]
            per_row = criterion(model(xs[s], masks[s]), ys[s]) * ws[s]
            loss_sum = (per_row.sum(1) / denominators[s]).sum()
            if model.flat.grad is not None:
                model.flat.grad.zero_()  # in place: the optimizer keeps views of its rows
            (loss_sum + penalty(model.flat).sum() if penalty.active else loss_sum).backward()
            _clip(model.flat.grad, trainer.grad_clip)
            opt.step(stepping[s], has_rows[s])
            total += per_row.detach().sum(1)
        hist["train/loss"][epoch, live] = total / denominators.sum(0)
        hist["lr"][epoch, live] = opt.lr
        if work.has_val:
            val = _validate(model, work, criterion, metric)
            for k, v in val.items():
                hist[k][epoch, live] = v
            stopper.update(epoch, val[es.monitor], active)
            if schedule.kind == "plateau":
                monitored = cfg.sched.monitor
                opt.set_lr(schedule.plateau(opt.lr, val[monitored], monitored in LOWER_IS_BETTER, active))
        stopper.count(active)
        if work.budget is not None:
            stopper.active = stopper.active & (work.budget > epoch + 1)
        n_active = int(stopper.active.sum())
        if on_epoch is not None:
            on_epoch(epoch, n_active)
        if n_active < len(live):
            keep = stopper.active
            done.store(live[~keep], ~keep, model, stopper)
            if n_active == 0:
                break
            live = live[keep]
            model.keep(keep)
            opt.keep(keep, model.flat)
            stopper.keep(keep, model)
            schedule.keep(keep)
            work.keep(keep)
    else:
        done.store(live, torch.ones_like(stopper.active), model, stopper)

    model.updating = None
    model.resize(done.last, done.last_stats)
    return FitResult(
        history={k: v[: epoch + 1].cpu().numpy() for k, v in hist.items()},
        epochs_run=done.epochs_run.cpu().numpy().astype(int),
        best_epoch=done.best_epoch.cpu().numpy().astype(int),
        best=done.best if work.has_val else done.last.clone(),
        last=done.last,
        best_stats=done.best_stats if work.has_val else done.last_stats.clone(),
        last_stats=done.last_stats,
        train_s=time.perf_counter() - start,
    )


class _Finished:
    """Full-size results of members that have left the population: [E, ...] by global index."""

    def __init__(self, model: Population, members: int):
        self.last = torch.empty_like(model.flat.detach())
        self.best = torch.empty_like(self.last)
        self.last_stats = torch.empty_like(model.stats)
        self.best_stats = torch.empty_like(model.stats)
        self.best_epoch = torch.full((members,), -1, device=self.last.device)
        self.epochs_run = torch.zeros(members, device=self.last.device)

    @torch.no_grad()
    def store(self, where: torch.Tensor, local: torch.Tensor, model: Population, stopper: EarlyStopping) -> None:
        """Keep the live members selected by the mask `local`, whose global indices are `where`."""
        self.last[where] = model.flat.detach()[local]
        self.last_stats[where] = model.stats[local]
        self.best[where] = stopper.best_params[local]
        self.best_stats[where] = stopper.best_stats[local]
        self.best_epoch[where] = stopper.best_epoch[local]
        self.epochs_run[where] = stopper.epochs_run[local]


class _Working:
    """The rows and generators of the members still training, shrunk as members leave."""

    def __init__(self, data: PopulationData, budget: Optional[np.ndarray]):
        E, device = data.y.shape[0], data.y.device
        members = torch.arange(E, device=device).unsqueeze(1)
        self.X, self.y, self.y_scale = data.X, data.y, data.y_scale
        self.weight = data.weight if data.weight is not None else torch.ones_like(data.y)
        self.train = list(data.train)
        self.rngs = [np.random.default_rng(s) for s in data.seeds]
        self.budget = None if budget is None else torch.as_tensor(budget, device=device)
        self.has_val = any(len(v) for v in data.val)
        if self.has_val:
            idx, mask = padded(data.val, device)
            self.Xv, self.yv = data.X[members, idx], data.y[members, idx]
            self.wv = mask * self.weight[members, idx]

    def keep(self, keep: torch.Tensor) -> None:
        chosen = keep.nonzero().flatten().tolist()
        self.train = [self.train[i] for i in chosen]
        self.rngs = [self.rngs[i] for i in chosen]
        for name in ("X", "y", "y_scale", "weight", "budget", "Xv", "yv", "wv"):
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name)[keep])

    def epoch_batches(self, batch: int):
        """This epoch's batches: features [steps, E, B, d], targets, weights, 0/1 masks, and on the host
        which members have rows in each step.

        Each member shuffles its own rows with its own generator, so its batches do not depend on
        E; one gather per epoch makes every step's slice contiguous.
        """
        E, n = self.y.shape
        steps = int(np.ceil(max(len(r) for r in self.train) / batch))
        idx = np.zeros((E, steps * batch), dtype=np.int64)
        mask = np.zeros((E, steps * batch), dtype=np.float32)
        for e, (rows, rng) in enumerate(zip(self.train, self.rngs)):
            idx[e, : len(rows)] = rows[rng.permutation(len(rows))]
            mask[e, : len(rows)] = 1.0
        device = self.y.device
        flat_rows = torch.from_numpy(idx + np.arange(E)[:, None] * n).view(E, steps, batch).transpose(0, 1)
        flat_rows = flat_rows.reshape(-1).to(device)
        shape = (steps, E, batch)
        xs = self.X.reshape(E * n, -1).index_select(0, flat_rows).view(*shape, *self.X.shape[2:])
        ys = self.y.reshape(-1).index_select(0, flat_rows).view(shape)
        masks = torch.from_numpy(mask).view(E, steps, batch).transpose(0, 1).contiguous().to(device)
        ws = masks * self.weight.reshape(-1).index_select(0, flat_rows).view(shape)
        has_rows = mask.reshape(E, steps, batch).any(-1).T.copy()  # [steps, E] on the host
        return xs, ys, ws, masks, has_rows


def _clip(grad: torch.Tensor, clip) -> None:
    # Per member: each row of the [E, P] gradient is one member's whole gradient.
    if clip.value is not None:
        grad.clamp_(-clip.value, clip.value)
    if clip.norm is not None:
        norm = grad.norm(dim=1, keepdim=True)
        grad.mul_((clip.norm / (norm + 1e-6)).clamp(max=1.0))


@torch.no_grad()
def _validate(model, work: _Working, criterion, metric) -> dict[str, torch.Tensor]:
    """Validation loss and task metric for all members in one batched pass."""
    Xv, yv, wv, y_scale = work.Xv, work.yv, work.wv, work.y_scale
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
