"""Whether training stopped while the members were still improving: the under-training notice."""

import math

import numpy as np

# A member "still improving" had its best validation epoch in the last 5% of trainer.epochs (at least the
# last epoch); "most" is more than half of the members that validated.
LAST_SHARE, MOST = 0.05, 0.5
# What would let them finish: more epochs, or larger steps in as many.
KEYS = ("trainer.epochs", "optim.lr")


def under_training(best_epoch, epochs: int) -> dict | None:
    """results.json's `under_training` when most members' best epoch (0-based; -1: no validation) lies in the
    last 5% of `epochs`, else None."""
    best = np.asarray(best_epoch, dtype=int)
    best = best[best >= 0]  # members without validation have no best epoch to read
    if not best.size or epochs < 1:
        return None
    last = max(1, math.ceil(LAST_SHARE * epochs))
    late = int((best + 1 > epochs - last).sum())
    if late <= MOST * best.size:
        return None
    span = "the last epoch" if last == 1 else f"the last {last} epochs"
    message = (f"{late} of {best.size} members had their best validation epoch in {span} of trainer.epochs="
               f"{epochs} (mean best epoch {best.mean() + 1:.1f}): still improving when training stopped; "
               f"raise trainer.epochs or optim.lr")
    return {"members": late, "of": int(best.size), "last_epochs": last, "epochs": int(epochs),
            "mean_best_epoch": float(best.mean() + 1), "change": list(KEYS), "message": message}
