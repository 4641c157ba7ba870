"""Checkpoints written atomically, loadable with torch.load(..., weights_only=True)."""

import os
from pathlib import Path

import torch


def save_checkpoint(path: Path, flat: torch.Tensor, stats: torch.Tensor, model, members: list[dict], extra: dict,
                    preprocessing: dict | None = None) -> None:
    """Write the population's [E, P] parameters, their layout and each member's fitted preprocessing
    (numpy arrays, stored as tensors); a crash never leaves half a file."""
    state = {
        "preprocessing": {k: torch.from_numpy(v) for k, v in (preprocessing or {}).items()},
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
