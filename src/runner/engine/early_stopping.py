"""Per-member early stopping kept in tensors: no host sync beyond one count per epoch."""

import numpy as np
import torch

from runner.config.metric_names import higher_is_better
from runner.config.schema import EarlyStoppingConfig, name_of
from runner.engine.state import MemberState


class EarlyStopping(MemberState):
    """Keeps each member's best validation score and its weights; freezes a member after `patience`.

    The simplest tracker: "keep the best one", reading the population's current weights.
    """

    per_member = ("best", "best_epoch", "best_params", "best_stats", "wait", "active", "epochs_run", "patience",
                  "min_delta")

    def __init__(self, model, cfg: EarlyStoppingConfig, patience: np.ndarray | None = None,
                 min_delta: np.ndarray | None = None):
        """`patience`, `min_delta` [E]: each member's own (inf: never stop); None: cfg's for all."""
        self.model = model
        flat, stats = model.flat, model.stats
        E, device = flat.shape[0], flat.device
        mode = name_of(cfg.mode)
        minimize = not higher_is_better(cfg.monitor) if mode == "auto" else mode == "min"
        self.sign = 1.0 if minimize else -1.0
        self.cfg = cfg
        start = float("inf") if cfg.baseline is None else self.sign * cfg.baseline
        self.best = torch.full((E,), start, device=device)
        self.best_epoch = torch.full((E,), -1, device=device)
        self.best_params = flat.detach().clone()
        self.best_stats = stats.clone()
        self.wait = torch.zeros(E, device=device)
        self.active = torch.ones(E, dtype=torch.bool, device=device)
        self.epochs_run = torch.zeros(E, device=device)
        never = cfg.patience is None
        self.patience = torch.as_tensor(np.full(E, np.inf if never else float(cfg.patience)) if patience is None
                                        else patience, dtype=torch.float32, device=device)
        self.min_delta = torch.as_tensor(np.full(E, cfg.min_delta) if min_delta is None else min_delta,
                                         dtype=torch.float32, device=device)

    @torch.no_grad()
    def update(self, epoch: int, value: torch.Tensor, active: torch.Tensor) -> None:
        """Record this epoch's monitored values [E]; improved members snapshot their weights."""
        c = self.cfg
        if epoch < c.start_from_epoch:
            return
        score = value * self.sign
        rel = name_of(c.min_delta_mode) == "rel"
        delta = self.min_delta * self.best.abs().nan_to_num(posinf=0.0) if rel else self.min_delta
        improved = active & (score < self.best - delta)
        self.best = torch.where(improved, score, self.best)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.best_params = torch.where(improved.unsqueeze(1), self.model.flat, self.best_params)
        self.best_stats = torch.where(improved.unsqueeze(1), self.model.stats, self.best_stats)
        self.wait = torch.where(improved, 0.0, self.wait + active.float())
        self.active = self.active & (self.wait < self.patience)

    def stop(self, members: torch.Tensor) -> None:
        """Stop the members where the bool mask `members` [E] is true (diverged, or out of epochs)."""
        self.active = self.active & ~members

    def count(self, ran: torch.Tensor) -> None:
        """Add the epoch just trained to each member that trained in it."""
        self.epochs_run += ran.float()


DIVERGED_FACTOR = 1e6  # a training loss this many times the member's first epoch's (at least 1e-3) has exploded


class Divergence(MemberState):
    """Stops members whose training loss went non-finite or exploded; the loop marks them diverged."""

    per_member = ("first",)

    def __init__(self, members: int, device):
        self.first = torch.full((members,), float("nan"), device=device)

    @torch.no_grad()
    def check(self, loss: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """[E] bool: the active members whose epoch loss `loss` [E] diverged."""
        self.first = torch.where(torch.isnan(self.first) & active, loss, self.first)
        limit = DIVERGED_FACTOR * self.first.nan_to_num(nan=0.0, posinf=0.0).clamp(min=1e-3)
        return active & (~torch.isfinite(loss) | (loss > limit))
