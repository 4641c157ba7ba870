"""Per-member early stopping kept in tensors: no host sync beyond one count per epoch."""

from typing import Optional

import torch

LOWER_IS_BETTER = ("val/loss", "val/rmse")


class EarlyStopping:
    """Tracks each member's best validation score and weights; freezes a member after `patience`."""

    def __init__(self, flat: torch.Tensor, monitor: str, mode: str, patience: Optional[int], min_delta: float):
        E, device = flat.shape[0], flat.device
        minimize = monitor in LOWER_IS_BETTER if mode == "auto" else mode == "min"
        self.sign = 1.0 if minimize else -1.0
        self.flat = flat
        self.patience = patience
        self.min_delta = min_delta
        self.best = torch.full((E,), float("inf"), device=device)
        self.best_epoch = torch.full((E,), -1, device=device)
        self.best_params = flat.detach().clone()
        self.wait = torch.zeros(E, device=device)
        self.active = torch.ones(E, dtype=torch.bool, device=device)
        self.epochs_run = torch.zeros(E, device=device)

    @torch.no_grad()
    def update(self, epoch: int, value: torch.Tensor, active: torch.Tensor) -> None:
        """Record this epoch's monitored values [E]; improved members snapshot their weights."""
        score = value * self.sign
        improved = active & (score < self.best - self.min_delta)
        self.best = torch.where(improved, score, self.best)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.best_params = torch.where(improved.unsqueeze(1), self.flat, self.best_params)
        self.wait = torch.where(improved, 0.0, self.wait + active.float())
        if self.patience is not None:
            self.active = self.active & (self.wait < self.patience)

    def count(self, ran: torch.Tensor) -> None:
        """Add the epoch just trained to each member that trained in it."""
        self.epochs_run += ran
