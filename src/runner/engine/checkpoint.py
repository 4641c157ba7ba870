"""Checkpoints written atomically, loadable with torch.load(..., weights_only=True)."""

import os
from pathlib import Path

import torch


def save_checkpoint(path: Path, flat: torch.Tensor, stats: torch.Tensor, model, members: list[dict], extra: dict) -> None:
    """Write the population's [E, P] parameters and their layout; a crash never leaves half a file."""
    state = {
        "flat": flat.detach().cpu().clone(),
        "stats": stats.detach().cpu().clone(),
        "slots": {n: {"shape": list(s.shape), "offset": s.offset, "kernel": s.kernel} for n, s in model.slots.items()},
        "members": members,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
