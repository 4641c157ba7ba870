"""trainer.precision: autocast of the training forward pass, and each member's own loss scale for float16."""

import contextlib

import torch

from runner.engine.state import MemberState
from runner.errors import RunnerError

AUTOCAST = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}
# torch.amp.GradScaler's defaults, applied to each member on its own.
INITIAL_SCALE, GROWTH, BACKOFF, GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000


class MixedPrecision(MemberState):
    """The training step's precision: float32 weights, gradients and optimizer state always; under bf16 and
    16-mixed the forward pass (matmuls, convolutions) runs in autocast, and validation and prediction stay float32.

    16-mixed scales each member's loss by its own factor before the backward pass (float16 gradients would
    underflow), and a member whose gradient overflowed skips that step and halves its scale; the others step on.
    Every decision stays in device tensors: no host read per step.
    """

    per_member = ("scale", "good_steps")

    def __init__(self, name: str, device: torch.device, members: int):
        self.name, self.device_type = name, device.type
        self.dtype = AUTOCAST[name]
        if self.dtype is not None:
            if not torch.amp.is_autocast_available(device.type):
                raise RunnerError(f"trainer.precision={name} has no autocast on {device.type}; "
                                  "use trainer.precision=32")
            if device.type == "cuda" and self.dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                raise RunnerError("trainer.precision=bf16 needs a GPU with bfloat16 (compute capability 8.0 or "
                                  "newer); use trainer.precision=16-mixed or 32")
        self.scaling = name == "16-mixed"
        self.scale = torch.full((members,), INITIAL_SCALE, device=device) if self.scaling else None
        self.good_steps = torch.zeros(members, device=device) if self.scaling else None

    def autocast(self):
        """The context of the training forward pass."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the members' losses [E] (each member's gradient is its own row of the [E, P] gradient)."""
        (loss * self.scale if self.scaling else loss).sum().backward()

    @torch.no_grad()
    def unscale(self, grad: torch.Tensor) -> torch.Tensor | None:
        """Divide each member's gradient row by its scale; [E] bool: the members whose gradient is finite
        (None without loss scaling: every gradient counts)."""
        if not self.scaling:
            return None
        grad.div_(self.scale.unsqueeze(1))
        return torch.isfinite(grad).all(1)

    @torch.no_grad()
    def update(self, finite: torch.Tensor | None, stepping: torch.Tensor) -> None:
        """GradScaler's rule for each member that took part in this step: halve the scale after an overflow,
        double it after GROWTH_INTERVAL finite steps in a row."""
        if not self.scaling:
            return
        overflow = stepping & ~finite
        good = torch.where(stepping & finite, self.good_steps + 1, torch.where(overflow, 0.0, self.good_steps))
        grow = good >= GROWTH_INTERVAL
        self.scale = self.scale * torch.where(overflow, BACKOFF, torch.where(grow, GROWTH, 1.0))
        self.good_steps = torch.where(grow, 0.0, good)
