"""The population training loop: every member steps in lockstep over its own shuffled rows."""

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from runner.config import Config
from runner.engine import losses
from runner.engine.augment import Augmenter
from runner.engine.early_stopping import LOWER_IS_BETTER, EarlyStopping
from runner.engine.inputs import MemberInputs, padded
from runner.engine.optim import StackedOptimizer
from runner.engine.schedules import Schedule
from runner.models import Population


STEP_KEYS = 1 << 20  # random-stream keys per epoch: more than any epoch's steps


@dataclass
class PopulationData:
    """The population's inputs (rows stored once) and the rows each member trains and validates on."""

    inputs: MemberInputs
    train: list[np.ndarray]
    val: list[np.ndarray]
    seeds: list[int]


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
    augment = Augmenter(cfg.aug, data.seeds, tuple(data.inputs.X.shape[1:]), model.outputs if loss == "ce" else 0,
                        device)
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
        idx, masks, real = work.epoch_batches(batch)
        has_rows = real.any(-1) & active.cpu().numpy()  # [steps, E] on the host, for the fused optimizer
        if augment.active:
            augment.new_epoch(real)
        stepping = torch.from_numpy(has_rows).to(device)
        total = torch.zeros(len(live), device=device)
        weight_sum = torch.zeros(len(live), device=device)
        model.train()
        for s in range(len(idx)):
            model.updating = stepping[s]
            model.noise.step = epoch * STEP_KEYS + s  # a member's draws depend on its own (epoch, step) only
            rows = idx[s]
            w = masks[s] if (rw := work.inputs.weights(rows)) is None else masks[s] * rw
            x, y = work.inputs.x(rows), work.inputs.targets(rows)
            if augment.active:
                x, y = augment(x, y, s, model.noise)
            per_row = model.per_row_loss(criterion, x, y, masks[s]) * w
            denominator = w.sum(1).clamp(min=1e-12)
            weight_sum += denominator
            loss_sum = (per_row.sum(1) / denominator).sum()
            if model.flat.grad is not None:
                model.flat.grad.zero_()  # in place: the optimizer keeps views of its rows
            (loss_sum + penalty(model.flat).sum() if penalty.active else loss_sum).backward()
            _clip(model.flat.grad, trainer.grad_clip)
            opt.step(stepping[s], has_rows[s])
            total += per_row.detach().sum(1)
        hist["train/loss"][epoch, live] = total / weight_sum
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
            augment.select(keep)
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
    """The rows, inputs and generators of the members still training, shrunk as members leave."""

    def __init__(self, data: PopulationData, budget: Optional[np.ndarray]):
        self.inputs = data.inputs
        device = self.inputs.X.device
        self.train = list(data.train)
        self.rngs = [np.random.default_rng(s) for s in data.seeds]
        self.budget = None if budget is None else torch.as_tensor(budget, device=device)
        self.has_val = any(len(v) for v in data.val)
        if self.has_val:
            self.val_idx, self.val_mask = padded(data.val, device)

    def keep(self, keep: torch.Tensor) -> None:
        chosen = keep.nonzero().flatten().tolist()
        self.train = [self.train[i] for i in chosen]
        self.rngs = [self.rngs[i] for i in chosen]
        self.inputs = self.inputs.select(keep)
        for name in ("budget", "val_idx", "val_mask"):
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name)[keep])

    def epoch_batches(self, batch: int):
        """This epoch's row indices [steps, E, B], 0/1 masks [steps, E, B] and, on the host, which of them are
        real rows (not padding) [steps, E, B].

        Each member shuffles its own rows with its own generator, so its batches do not depend on E;
        the rows themselves are gathered (and preprocessed) step by step.
        """
        E = len(self.train)
        steps = int(np.ceil(max(len(r) for r in self.train) / batch))
        idx = np.zeros((E, steps * batch), dtype=np.int64)
        mask = np.zeros((E, steps * batch), dtype=np.float32)
        for e, (rows, rng) in enumerate(zip(self.train, self.rngs)):
            idx[e, : len(rows)] = rows[rng.permutation(len(rows))]
            mask[e, : len(rows)] = 1.0
        device = self.inputs.X.device
        idx_t = torch.from_numpy(idx).view(E, steps, batch).transpose(0, 1).contiguous().to(device)
        masks = torch.from_numpy(mask).view(E, steps, batch).transpose(0, 1).contiguous().to(device)
        real = mask.reshape(E, steps, batch).transpose(1, 0, 2) > 0
        return idx_t, masks, real


def _clip(grad: torch.Tensor, clip) -> None:
    # Per member: each row of the [E, P] gradient is one member's whole gradient.
    if clip.value is not None:
        grad.clamp_(-clip.value, clip.value)
    if clip.norm is not None:
        norm = grad.norm(dim=1, keepdim=True)
        grad.mul_((clip.norm / (norm + 1e-6)).clamp(max=1.0))


@torch.no_grad()
def _validate(model, work: _Working, criterion, metric) -> dict[str, torch.Tensor]:
    """Validation loss and task metric for all members, in chunks of validation rows."""
    inputs, idx, mask = work.inputs, work.val_idx, work.val_mask
    model.eval()
    loss_sum = torch.zeros(idx.shape[0], device=idx.device)
    score_sum, n = torch.zeros_like(loss_sum), torch.zeros_like(loss_sum)
    step = inputs.chunk_rows()
    for start in range(0, idx.shape[1], step):
        rows, w = idx[:, start : start + step], mask[:, start : start + step]
        if (rw := inputs.weights(rows)) is not None:
            w = w * rw
        out, y = model(inputs.x(rows)), inputs.targets(rows)
        loss_sum += (criterion(out, y, smoothing=False) * w).sum(1)
        if metric == "val/rmse":
            score_sum += ((out.squeeze(-1) - y) ** 2 * w).sum(1)
        else:
            pred = (out.squeeze(-1) > 0).float() if out.shape[-1] == 1 else out.argmax(-1).float()
            score_sum += ((pred == y).float() * w).sum(1)
        n += w.sum(1)
    n = n.clamp(min=1e-12)
    result = {"val/loss": loss_sum / n}
    result[metric] = (score_sum / n).sqrt() * inputs.y_scale.squeeze(1) if metric == "val/rmse" else score_sum / n
    return result
