"""Scoring each member on its own rows (test or validation) with the weights training kept, in chunks."""

import time

import numpy as np
import pandas as pd
import torch

from runner.engine import losses
from runner.engine.inputs import MemberInputs, padded
from runner.models.stacked import NO_STEP, Step


@torch.no_grad()
def chunked(fn, model, inputs: MemberInputs, rows: list[np.ndarray]) -> np.ndarray:
    """fn(preprocessed inputs [E, chunk, ...]) -> [E, chunk, ...] over each member's own rows, chunk by chunk."""
    model.eval()
    idx, _ = padded(rows, inputs.X.device)
    step = inputs.chunk_rows(model.rows_per_pass)
    parts = [fn(inputs.x(idx[:, s : s + step])) for s in range(0, idx.shape[1], step)]
    return torch.cat(parts, dim=1).cpu().numpy()


def member_outputs(model, inputs: MemberInputs, rows: list[np.ndarray], loss: str, step: Step = NO_STEP
                   ) -> np.ndarray:
    """[E, max rows, K] probabilities (or standardized regression outputs) of each member's own rows (under `step`:
    a test-time dropout pass's key)."""
    return chunked(lambda x: losses.probabilities(loss, model(x, step=step)), model, inputs, rows)


def seconds_per_row(model, inputs: MemberInputs, members, loss: str) -> float:
    """Seconds to predict one test row with one member (the population's test pass, divided out)."""
    rows = [m.test for m in members]
    start = time.perf_counter()
    member_outputs(model, inputs, rows, loss)
    return (time.perf_counter() - start) / max(sum(len(r) for r in rows), 1)


def predict_rows(model, inputs: MemberInputs, pre, members, part: str, loss: str, dataset, step: Step = NO_STEP
                 ) -> pd.DataFrame:
    """The predictions table (the README's predictions.csv) for each member's `part` rows ("test" or "val")."""
    rows = [getattr(m, part) for m in members]
    out = member_outputs(model, inputs, rows, loss, step)
    classes = np.asarray(dataset.classes)
    frames = []
    for e, (m, r) in enumerate(zip(members, rows)):
        frame = {**m.coordinates(), "row": r}
        if len(classes):
            proba = out[e, : len(r)]
            frame["y_true"] = classes[dataset.y[r]]
            frame["y_pred"] = classes[proba.argmax(1)]
            frame.update({f"p_{c}": proba[:, j] for j, c in enumerate(classes)})
        else:
            frame["y_true"] = dataset.y[r]
            frame["y_pred"] = out[e, : len(r), 0] * pre.y_scale[e] + pre.y_mean[e]
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def dropout_passes(model, inputs: MemberInputs, pre, members, part: str, loss: str, dataset, passes: int
                   ) -> pd.DataFrame:
    """predict_rows for `passes` stochastic passes (dropout on, each pass its own draw of every member's stream),
    with a `pass` column and a `unit` column numbering (member, pass)."""
    frames = []
    model.sampling = True
    try:
        for k in range(passes):
            # training steps are >= 0: test-time draws never repeat a training mask
            frame = predict_rows(model, inputs, pre, members, part, loss, dataset, Step(key=-(k + 1)))
            frames.append(frame.assign(**{"pass": k, "unit": frame["member"] * passes + k}))
    finally:
        model.sampling = False
    return pd.concat(frames, ignore_index=True)
