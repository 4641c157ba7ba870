"""Per-example losses on logits for each task, shaped [E, B], and the kernel penalties."""

import numpy as np
import torch
import torch.nn.functional as F

from runner.config.schema import LossConfig, RegConfig
from runner.engine.state import MemberState
from runner.errors import RunnerError

COMPATIBLE = {"bce": ("binary",), "ce": ("binary", "multiclass"), "mse": ("regression",)}
AUTO = {"binary": "bce", "multiclass": "ce", "regression": "mse"}


def resolve_loss(name: str, task: str) -> str:
    """The loss for a task: `auto` picks BCE/CE/MSE; an explicit one must fit the task."""
    loss = AUTO[task] if name == "auto" else name
    if task not in COMPATIBLE[loss]:
        raise RunnerError(f"loss={loss} does not fit a {task} target; use loss=auto or loss={AUTO[task]}")
    return loss


def output_size(loss: str, n_classes: int) -> int:
    """Width of the output head: one logit for BCE/MSE, one per class for CE."""
    return n_classes if loss == "ce" else 1


class Criterion(MemberState):
    """The configured loss of every example of every member: out [E, B, K], y [E, B] (or soft [E, B, K]) -> [E, B].

    `smoothing` [E]: each member's own label smoothing (None: cfg's for all). A member whose value is 0 gets
    exactly the unsmoothed loss beside members that smooth, so it trains as it would alone.
    """

    per_member = ("smoothing",)

    def __init__(self, loss: str, cfg: LossConfig, device, smoothing: np.ndarray | None = None):
        self.loss = loss
        # A tensor only where some member smooths: the unsmoothed path stays torch's own.
        if smoothing is None:
            self.smoothing = cfg.label_smoothing
        else:
            self.smoothing = torch.as_tensor(smoothing, dtype=torch.float32, device=device).reshape(-1, 1) if np.any(
                smoothing) else 0.0
        self.moe, self.balance = cfg.moe, cfg.balance  # read by a mixture of experts' own loss
        self.pos_weight = None if cfg.pos_weight is None else torch.tensor(cfg.pos_weight, device=device)

    def __call__(self, out: torch.Tensor, y: torch.Tensor, smoothing: bool = True) -> torch.Tensor:
        # Validation loss is reported on the true targets, so it stays comparable across smoothing values.
        alpha = self.smoothing if smoothing else 0.0
        if isinstance(alpha, torch.Tensor):
            return self._per_member(out, y, alpha)
        if self.loss == "bce":
            # Smoothing on the two-class form: targets y(1-a) + a/2.
            target = y * (1 - alpha) + alpha / 2
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), target, reduction="none",
                                                      pos_weight=self.pos_weight)
        if self.loss == "ce":
            e, b, k = out.shape
            # y: class codes [E, B], or class probabilities [E, B, K] (mixup, cutmix).
            target = y.reshape(e * b, k) if y.dim() == 3 else y.reshape(-1).long()
            flat = F.cross_entropy(out.reshape(e * b, k), target, reduction="none", label_smoothing=alpha)
            return flat.view(e, b)
        return (out.squeeze(-1) - y) ** 2

    def _per_member(self, out: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The same losses with each member's own smoothing `alpha` [E, 1] (torch's formulas, written out)."""
        if self.loss == "bce":
            target = y * (1 - alpha) + alpha / 2
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), target, reduction="none",
                                                      pos_weight=self.pos_weight)
        if self.loss == "ce":
            logp = torch.log_softmax(out, -1)
            if y.dim() == 3:  # class probabilities (mixup, cutmix), smoothed toward uniform
                k = out.shape[-1]
                return -(logp * (y * (1 - alpha[..., None]) + alpha[..., None] / k)).sum(-1)
            nll = -logp.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
            return (1 - alpha) * nll + alpha * -logp.mean(-1)
        return (out.squeeze(-1) - y) ** 2


class Penalty(MemberState):
    """reg.l2 (l2/2·Σw²) and reg.l1 (l1·Σ|w|) per member, on kernel entries only; `l1`, `l2` [E]: each
    member's own strengths (None: cfg's for all)."""

    per_member = ("l1", "l2")

    def __init__(self, cfg: RegConfig, kernel_mask: torch.Tensor, l1: np.ndarray | None = None,
                 l2: np.ndarray | None = None):
        self.mask = kernel_mask
        self.l2 = cfg.l2 if l2 is None else torch.as_tensor(l2, dtype=kernel_mask.dtype, device=kernel_mask.device)
        self.l1 = cfg.l1 if l1 is None else torch.as_tensor(l1, dtype=kernel_mask.dtype, device=kernel_mask.device)
        # A member whose strength is 0 adds exactly 0 beside members that use the term.
        self.uses_l2, self.uses_l1 = bool(np.any(cfg.l2 if l2 is None else l2)), bool(np.any(cfg.l1 if l1 is None else l1))
        self.active = self.uses_l2 or self.uses_l1

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
        if self.uses_l2:
            total = total + 0.5 * self.l2 * (flat.square() * self.mask).sum(1)
        if self.uses_l1:
            total = total + self.l1 * (flat.abs() * self.mask).sum(1)
        return total


def probabilities(loss: str, out: torch.Tensor) -> torch.Tensor:
    """Class probabilities [E, B, K] from logits (K=2 for BCE); regression outputs pass through."""
    if loss == "bce":
        p1 = torch.sigmoid(out)
        return torch.cat([1 - p1, p1], dim=-1)
    if loss == "ce":
        return torch.softmax(out, dim=-1)
    return out
