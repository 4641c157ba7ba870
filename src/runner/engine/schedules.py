"""Learning-rate schedules: each member's rate per epoch, as closed forms of the epoch or a per-member reduce-on-plateau.

Rates flow one way: the loop asks `rates(epoch)` and hands them to the optimizer; it never reads a rate back.
"""

import math

import numpy as np
import torch

from runner.config.metric_names import higher_is_better
from runner.config.schema import SchedConfig, name_of
from runner.engine.state import MemberState


class Schedule(MemberState):
    """Gives each member's learning rate for an epoch; `plateau` decides per member from its validation.

    From `swa_start` on, every member trains at `swa_lr` (SWA's constant rate), when that is set. With
    sched.warmup_steps = N, a member's k-th optimizer step (from 0) takes (k + 1)/N of its rate while k < N.
    """

    per_member = ("current", "best", "bad", "steps")
    fields = ("bases",)

    def __init__(self, cfg: SchedConfig, base_lr: float | np.ndarray, epochs: int, members: int, device,
                 swa_start: int | None = None, swa_lr: float | None = None):
        """`base_lr`: every member's optim.lr, or each member's own ([E])."""
        self.cfg, self.base, self.epochs = cfg, float(np.max(base_lr)), epochs
        self.kind = name_of(cfg.name)
        self.swa_start, self.swa_lr = swa_start, swa_lr
        bases = np.broadcast_to(np.asarray(base_lr, dtype=np.float64), (members,)).copy()
        self.bases = torch.as_tensor(bases)  # float64 on the host, where the rates are computed
        self.current = torch.as_tensor(bases, dtype=torch.float32, device=device)
        self.best = self.bad = None
        self.steps = torch.zeros(members, device=device)  # optimizer steps each member has taken (warmup)
        if self.kind == "plateau":
            self.best = torch.full((members,), float("inf"), device=device)
            self.bad = torch.zeros(members, device=device)

    def select(self, keep: torch.Tensor) -> None:
        super().select(keep)
        self.bases = self.bases[keep.cpu()]

    def rates(self, epoch: int) -> torch.Tensor:
        """[E] learning rates for `epoch`."""
        if self.swa_lr is not None and epoch >= self.swa_start:
            return torch.full_like(self.current, self.swa_lr)
        if self.kind != "plateau":
            # Each member's rate from its own base, in float64 as torch's schedulers compute it.
            bases = self.bases.tolist()
            rate = {b: self.lr(epoch, b) for b in set(bases)}
            self.current = torch.tensor([rate[b] for b in bases], dtype=torch.float32, device=self.current.device)
        return self.current

    def warmed(self, rates: torch.Tensor, stepping: torch.Tensor) -> torch.Tensor | None:
        """This step's rates under sched.warmup_steps (None without warmup), counting the step of each member that
        takes it (`stepping` [E]): a member's warmup is its own steps', whatever the population."""
        if not self.cfg.warmup_steps:
            return None
        factor = ((self.steps + 1) / self.cfg.warmup_steps).clamp(max=1.0)
        self.steps += stepping
        return rates * factor

    def observe(self, val: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        """After an epoch's validation: plateau cuts the rate of members that stopped improving."""
        if self.kind == "plateau":
            monitored = self.cfg.monitor
            self.current = self.plateau(self.current, val[monitored], not higher_is_better(monitored), active)

    def lr(self, epoch: int, base: float | None = None) -> float:
        """The learning rate of `epoch` for a member whose optim.lr is `base` (None: the largest member's; the
        plateau schedule starts at base)."""
        c, base, kind = self.cfg, self.base if base is None else base, self.kind
        if kind == "step":
            return base * c.gamma ** (epoch // c.step_size)
        if kind == "exponential":
            return base * c.gamma**epoch
        if kind == "cosine":
            return _cosine(base, c.eta_min, epoch, self.epochs)
        if kind == "warmup_cosine":
            w = c.warmup_epochs
            if epoch < w:  # torch's LinearLR(start_factor=1/w, total_iters=w)
                return base * (1 / w + (1 - 1 / w) * epoch / w)
            return _cosine(base, c.eta_min, epoch - w, self.epochs - w)
        if kind == "onecycle":
            return _onecycle(c, base, epoch, self.epochs)
        return base

    @torch.no_grad()
    def plateau(self, lr: torch.Tensor, value: torch.Tensor, minimize: bool, active: torch.Tensor) -> torch.Tensor:
        """torch's ReduceLROnPlateau (relative threshold, no cooldown), one decision per member."""
        c = self.cfg
        score = value if minimize else -value
        # torch's relative threshold, written for the negated score when maximizing
        improved = active & (score < self.best * (1 - c.threshold if minimize else 1 + c.threshold))
        self.best = torch.where(improved, score, self.best)
        self.bad = torch.where(improved, 0.0, self.bad + active.float())
        cut = self.bad > c.patience
        new = torch.clamp(lr * c.factor, min=c.min_lr)
        cut = cut & (lr - new > 1e-8)
        self.bad = torch.where(cut, 0.0, self.bad)
        return torch.where(cut, new, lr)


def _cosine(base: float, eta_min: float, t: int, total: int) -> float:
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / max(total, 1))) / 2


def _onecycle(c: SchedConfig, base: float, epoch: int, epochs: int) -> float:
    # torch's OneCycleLR (two phases, cosine annealing) with one step per epoch.
    peak = c.max_lr if c.max_lr is not None else base
    start, end = peak / c.div_factor, peak / c.div_factor / c.final_div_factor
    up = float(c.pct_start * epochs) - 1
    if epoch <= up:
        return _anneal(start, peak, epoch / up if up > 0 else 1.0)
    return _anneal(peak, end, (epoch - up) / (epochs - 1 - up))


def _anneal(a: float, b: float, pct: float) -> float:
    return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)
