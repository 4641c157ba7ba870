"""Choosing the torch device a run trains on."""

import torch

from runner.errors import RunnerError


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise RunnerError(f"trainer.device={name} is not available on this machine; use trainer.device=auto or cpu")
    return torch.device(name)


# Below this many multiply-adds per step, intra-op threads cost more in hand-offs than they save
# (and on a loaded machine they spin-wait: measured 50x slower on 2 busy cores for heart k-fold).
SMALL_STEP_MACS = 20_000_000


def configure_threads(threads: int | None, device: torch.device, macs_per_step: int) -> None:
    """Set torch's CPU thread count: the configured number, or 1 for small steps."""
    if device.type != "cpu":
        return
    if threads is None and macs_per_step < SMALL_STEP_MACS:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
