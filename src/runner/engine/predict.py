"""Scoring each member on its own rows (test or validation) with the weights training kept."""

import numpy as np
import pandas as pd
import torch

from runner.engine import losses
from runner.engine.loop import padded


@torch.no_grad()
def predict_rows(model, feats, members, part: str, loss: str, dataset) -> pd.DataFrame:
    """The predictions table (DESIGN.md's predictions.csv) for each member's `part` rows ("test" or "val")."""
    model.eval()
    rows = [getattr(m, part) for m in members]
    X = torch.from_numpy(feats.X).to(model.flat.device)
    idx, _ = padded(rows, X.device)
    ar = torch.arange(model.members, device=X.device).unsqueeze(1)
    out = losses.probabilities(loss, model(X[ar, idx])).cpu().numpy()
    classes = np.asarray(dataset.classes)
    frames = []
    for e, (m, r) in enumerate(zip(members, rows)):
        frame = {"member": m.index, "fold": m.fold, "repeat": m.repeat, "seed": m.seed, "row": r}
        if len(classes):
            proba = out[e, : len(r)]
            frame["y_true"] = classes[dataset.y[r]]
            frame["y_pred"] = classes[proba.argmax(1)]
            frame.update({f"p_{c}": proba[:, j] for j, c in enumerate(classes)})
        else:
            frame["y_true"] = dataset.y[r]
            frame["y_pred"] = out[e, : len(r), 0] * feats.y_scale[e] + feats.y_mean[e]
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)
