"""Checkpoints written atomically, loadable with torch.load(..., weights_only=True)."""

from pathlib import Path

import torch

from runner.rundir.folder import write_atomic


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
    write_atomic(path, lambda file: torch.save(state, file))
