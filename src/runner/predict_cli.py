"""`runner predict RUN_DIR --data FILE.csv`: every member's predictions for new rows, and the population's mean.

Everything comes from the run's checkpoint (weights, model spec, each member's fitted preprocessing, columns,
classes); the training data is not read again. Imports no sklearn or matplotlib.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from runner.errors import RunnerError

USAGE = "runner predict RUN_DIR --data FILE.csv [--out FILE] [--checkpoint best|last|refit|avg_<name>]"
CHUNK_ROWS = 4096  # rows per forward pass
NEEDED = ("flat", "stats", "model", "model_config", "input_shape", "classes", "loss", "preprocessing", "members")


def predict_command(args: list[str]) -> int:
    """Run `runner predict`; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(prog="runner predict", usage=USAGE, description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished `runner train` run directory")
    parser.add_argument("--data", required=True, help="a CSV file with the training file's feature columns")
    parser.add_argument("--out", help="where to write the predictions CSV (default: print it)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, refit or avg_<name>")
    try:
        opts = parser.parse_args(args)
    except SystemExit as exit_:
        return int(exit_.code or 0) and 2
    try:
        table = predict(Path(opts.run_dir), Path(opts.data), opts.checkpoint)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if opts.out:
        table.to_csv(opts.out, index=False)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


def load_checkpoint(run_dir: Path, name: str) -> dict:
    """The checkpoint `name` of a run, checked to hold what prediction needs; one-line errors otherwise."""
    import torch

    if not run_dir.is_dir():
        raise RunnerError(f"run directory {run_dir} does not exist (give the directory `runner train` printed)")
    path = run_dir / "checkpoints" / f"{name}.pt"
    if not path.is_file():
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt") if not p.stem.endswith("_state"))
        raise RunnerError(f"{path} does not exist; checkpoints of this run: {', '.join(found) or 'none'} "
                          "(choose one with --checkpoint)")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated, foreign or from an incompatible version
        raise RunnerError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is truncated or not a "
                          "runner checkpoint: train the run again") from None
    missing = [k for k in NEEDED if k not in state]
    if missing:
        raise RunnerError(f"checkpoint {path} lacks {', '.join(missing)}: it comes from another runner version; "
                          "train the run again with this version")
    return state


def predict(run_dir: Path, data: Path, checkpoint: str = "best"):
    """A DataFrame: `row`, then each member's predictions and the mean over the members."""
    import pandas as pd
    import torch

    from runner.config import ModelConfig
    from runner.engine.losses import probabilities
    from runner.models import build_model

    state = load_checkpoint(run_dir, checkpoint)
    if "numeric" not in state:
        raise RunnerError(f"the run in {run_dir} learned from images; runner predict reads tables (CSV) only")
    X = _table(data, state)
    pre = {k: v.numpy() for k, v in state["preprocessing"].items()}
    E, classes = len(state["members"]), list(state["classes"])
    model = build_model(ModelConfig(**state["model_config"]), E, list(state["input_shape"]), _outputs(state))
    with torch.no_grad():
        model.flat.copy_(state["flat"])
        model.stats.copy_(state["stats"])
    model.eval()
    parts = []
    for start in range(0, len(X), CHUNK_ROWS):
        x = X[None, start : start + CHUNK_ROWS]
        if "fill" in pre:
            x = np.where(np.isnan(x), pre["fill"][:, None], x)
        x = np.broadcast_to((x - pre["shift"][:, None]) / pre["scale"][:, None], (E, *x.shape[1:]))
        with torch.no_grad():
            parts.append(probabilities(state["loss"], model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))))
    out = torch.cat(parts, 1).numpy() if parts else np.zeros((E, 0, max(len(classes), 1)), np.float32)  # [E, n, K]
    ids = [m["member"] for m in state["members"]]
    frame = {"row": np.arange(len(X))}
    if classes:
        for e, i in enumerate(ids):
            frame[f"pred_m{i}"] = np.asarray(classes)[out[e].argmax(1)]
            frame.update({f"p_{c}_m{i}": out[e, :, j] for j, c in enumerate(classes)})
        mean = out.mean(0)
        frame.update({f"p_{c}": mean[:, j] for j, c in enumerate(classes)})
        frame["pred_mean"] = np.asarray(classes)[mean.argmax(1)]
    else:
        values = out[..., 0] * pre["y_scale"][:, None] + pre["y_mean"][:, None]
        frame.update({f"pred_m{i}": values[e] for e, i in enumerate(ids)})
        frame["pred_mean"] = values.mean(0)
    return pd.DataFrame(frame)


def _outputs(state: dict) -> int:
    """The model's output width: one logit for BCE or regression, one per class for CE."""
    return len(state["classes"]) if state["loss"] == "ce" else 1


def _table(data: Path, state: dict) -> np.ndarray:
    """[n, d] float32 inputs of the file, built as training built them (NaN where missing)."""
    import pandas as pd

    from runner.categories import as_category

    if not data.is_file():
        raise RunnerError(f"data file {data} does not exist (give a CSV file with --data)")
    try:
        table = pd.read_csv(data)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise RunnerError(f"cannot read {data} as CSV: {' '.join(str(err).split())}") from None
    numeric, categorical = list(state["numeric"]), list(state["categorical"])
    missing = [c for c in numeric + categorical if c not in table.columns]
    if missing:
        raise RunnerError(f"{data} lacks the feature column{'s' * (len(missing) > 1)} {', '.join(missing)} that "
                          f"the run trained on (the target {state['target']!r} is not needed)")
    parts = []
    for c in numeric:
        values = pd.to_numeric(table[c], errors="coerce")
        bad = table[c].notna() & values.isna()
        if bad.any():
            raise RunnerError(f"column {c!r} of {data} holds a non-number ({table[c][bad].iloc[0]!r}) where the "
                              "run trained on numbers")
        parts.append(values.to_numpy(np.float64)[:, None])
    for c in categorical:
        values = as_category(table[c]).to_numpy(object)
        domain = np.asarray(state["categories"][c], dtype=object)
        onehot = (values[:, None] == domain[None, :]).astype(np.float64)  # an unseen value: all zeros
        onehot[table[c].isna().to_numpy()] = np.nan
        parts.append(onehot)
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(table), 0), np.float32)
