"""Per-example losses on logits for each task, shaped [E, B]."""

import torch
import torch.nn.functional as F

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


def per_example(loss: str, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss of every example of every member: out [E, B, K], y [E, B] -> [E, B]."""
    if loss == "bce":
        target = y if label_smoothing == 0 else y * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), target, reduction="none")
    if loss == "ce":
        e, b, k = out.shape
        flat = F.cross_entropy(out.reshape(e * b, k), y.reshape(-1).long(), reduction="none",
                               label_smoothing=label_smoothing)
        return flat.view(e, b)
    return (out.squeeze(-1) - y) ** 2


def probabilities(loss: str, out: torch.Tensor) -> torch.Tensor:
    """Class probabilities [E, B, K] from logits (K=2 for BCE); regression outputs pass through."""
    if loss == "bce":
        p1 = torch.sigmoid(out)
        return torch.cat([1 - p1, p1], dim=-1)
    if loss == "ce":
        return torch.softmax(out, dim=-1)
    return out
