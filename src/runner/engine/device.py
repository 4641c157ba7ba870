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
