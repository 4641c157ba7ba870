"""Per-member early stopping kept in tensors: no host sync beyond one count per epoch."""

import torch

from runner.config import EarlyStoppingConfig, name_of

LOWER_IS_BETTER = ("val/loss", "val/rmse")


class EarlyStopping:
    """Tracks each member's best validation score and weights; freezes a member after `patience`."""

    def __init__(self, model, cfg: EarlyStoppingConfig):
        flat, stats = model.flat, model.stats
        E, device = flat.shape[0], flat.device
        mode = name_of(cfg.mode)
        minimize = cfg.monitor in LOWER_IS_BETTER if mode == "auto" else mode == "min"
        self.sign = 1.0 if minimize else -1.0
        self.cfg = cfg
        self.flat, self.stats = flat, stats
        start = float("inf") if cfg.baseline is None else self.sign * cfg.baseline
        self.best = torch.full((E,), start, device=device)
        self.best_epoch = torch.full((E,), -1, device=device)
        self.best_params = flat.detach().clone()
        self.best_stats = stats.clone()
        self.wait = torch.zeros(E, device=device)
        self.active = torch.ones(E, dtype=torch.bool, device=device)
        self.epochs_run = torch.zeros(E, device=device)

    @torch.no_grad()
    def update(self, epoch: int, value: torch.Tensor, active: torch.Tensor) -> None:
        """Record this epoch's monitored values [E]; improved members snapshot their weights."""
        c = self.cfg
        if epoch < c.start_from_epoch:
            return
        score = value * self.sign
        delta = c.min_delta * self.best.abs().nan_to_num(posinf=0.0) if name_of(c.min_delta_mode) == "rel" else c.min_delta
        improved = active & (score < self.best - delta)
        self.best = torch.where(improved, score, self.best)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.best_params = torch.where(improved.unsqueeze(1), self.flat, self.best_params)
        self.best_stats = torch.where(improved.unsqueeze(1), self.stats, self.best_stats)
        self.wait = torch.where(improved, 0.0, self.wait + active.float())
        if c.patience is not None:
            self.active = self.active & (self.wait < c.patience)

    def keep(self, keep: torch.Tensor, model=None) -> None:
        """Keep only the members where `keep` [E] is true; `model` holds their parameters now."""
        self.flat, self.stats = model.flat, model.stats
        for name in ("best", "best_epoch", "best_params", "best_stats", "wait", "active", "epochs_run"):
            setattr(self, name, getattr(self, name)[keep])

    def count(self, ran: torch.Tensor) -> None:
        """Add the epoch just trained to each member that trained in it."""
        self.epochs_run += ran.float()
