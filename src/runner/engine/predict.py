"""Scoring each member on its own test rows with the weights training kept."""

import numpy as np
import pandas as pd
import torch

from runner.engine import losses
from runner.engine.loop import padded


@torch.no_grad()
def predict_test(model, X: torch.Tensor, members, loss: str, classes: list[str], y_true: np.ndarray,
                 y_mean: np.ndarray, y_scale: np.ndarray) -> pd.DataFrame:
    """The predictions table: one row per member per test row (DESIGN.md's predictions.csv)."""
    model.eval()
    idx, _ = padded([m.test for m in members], X.device)
    ar = torch.arange(model.members, device=X.device).unsqueeze(1)
    out = losses.probabilities(loss, model(X[ar, idx])).cpu().numpy()
    frames = []
    for e, m in enumerate(members):
        k = len(m.test)
        frame = {"member": m.index, "fold": m.fold, "repeat": m.repeat, "seed": m.seed, "row": m.test}
        if classes:
            proba = out[e, :k]
            frame["y_true"] = np.asarray(classes)[y_true[m.test]]
            frame["y_pred"] = np.asarray(classes)[proba.argmax(1)]
            frame.update({f"p_{c}": proba[:, j] for j, c in enumerate(classes)})
        else:
            frame["y_true"] = y_true[m.test]
            frame["y_pred"] = out[e, :k, 0] * y_scale[e] + y_mean[e]
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)
