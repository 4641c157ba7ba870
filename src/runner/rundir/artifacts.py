"""The run directory's per-member files: metrics.csv, split_indices.json and TensorBoard events (with hparams)."""

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.rundir import events
from runner.rundir.folder import write_atomic


def history_frame(history: dict[str, np.ndarray], member_ids: list[int]) -> pd.DataFrame:
    """metrics.csv: one row per member per epoch it trained (`member, epoch, train/loss, ...`)."""
    epochs, E = history["train/loss"].shape
    frame = pd.DataFrame({
        "member": np.tile(np.asarray(member_ids), epochs),
        "epoch": np.repeat(np.arange(epochs), E),
    })
    order = ["train/loss"] + sorted(k for k in history if k.startswith("val/")) + ["lr"]
    for key in order:
        frame[key] = history[key].reshape(-1)
    return frame[frame["train/loss"].notna()].sort_values(["member", "epoch"], ignore_index=True)


def predictions_frame(val: pd.DataFrame, test: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """predictions.csv: every member's validation and test predictions, marked by `split` (val/test), with
    row numbers of the data file (learned combinations and blending are fit on the validation ones)."""
    both = pd.concat([val.assign(split="val"), test.assign(split="test")], ignore_index=True)
    both["row"] = rows[both["row"].to_numpy()]
    first = [c for c in both.columns if c not in ("split", "row", "y_true", "y_pred") and not c.startswith("p_")]
    return both[first + ["split", "row", "y_true", "y_pred"] + [c for c in both.columns if c.startswith("p_")]]


def split_records(members, rows: np.ndarray, selection=None) -> list[dict]:
    """split_indices.json: each member's train/val/test as row numbers of the dataset file.

    `selection` (eval.refit): the members as they were selected, whose train/val split picked the epoch
    count; recorded as `selection_train`/`selection_val` beside the refit's train rows.
    """
    records = []
    for i, m in enumerate(members):
        record = {**m.coordinates(),
                  "train": rows[m.train].tolist(), "val": rows[m.val].tolist(), "test": rows[m.test].tolist()}
        if selection is not None:
            record["selection_train"] = rows[selection[i].train].tolist()
            record["selection_val"] = rows[selection[i].val].tolist()
        records.append(record)
    return records


def add_inner_models(path: Path, inner: dict[int, list[dict]]) -> None:
    """Add to split_indices.json, under each member's "inner_models", the models an ensemble trained for it
    (stacking's inner members and meta-model, blending's meta-model): each with its role and rows."""
    records = json.loads(path.read_text())
    for record in records:
        if record["member"] in inner:
            record.setdefault("inner_models", []).extend(inner[record["member"]])
    write_json(path, records)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (rundir.folder.write_atomic)."""
    write_atomic(path, json.dumps(obj, indent=2))


# TensorBoard tags beside a curve's members' mean (its own tag): the band's bounds and each member's curve.
BAND = "spread/{tag}/{bound}"
MEMBER = "members/{tag}/{member}"


def write_tensorboard(log_dir: Path, frame: pd.DataFrame) -> None:
    """One TensorBoard run for the experiment (`log_dir`), an event per epoch: each metric's members' mean under
    its own tag (`val/loss`), their min and max (BAND) and each member's value (MEMBER, the member zero-padded);
    a custom scalars layout draws the mean inside its band and the members' curves together."""
    tags = [c for c in frame.columns if c not in ("member", "epoch")]
    width = len(str(frame["member"].max()))
    epochs = sorted(frame["epoch"].unique().tolist())
    scalars: list[dict[str, float]] = [{} for _ in epochs]
    for tag in tags:
        wide = frame.pivot(index="epoch", columns="member", values=tag).reindex(epochs)
        for bound, values in (("", wide.mean(axis=1)), ("min", wide.min(axis=1)), ("max", wide.max(axis=1))):
            name = BAND.format(tag=tag, bound=bound) if bound else tag
            for step, value in zip(scalars, values.tolist()):
                if value == value:  # NaN: no member trained that epoch (or logged that metric)
                    step[name] = value
        for member, values in wide.items():
            name = MEMBER.format(tag=tag, member=f"{member:0{width}d}")
            for step, value in zip(scalars, values.tolist()):
                if value == value:
                    step[name] = value
    layout = events.margin_layout(tags, BAND, MEMBER.format(tag="{tag}", member=r"\d+"))
    log_dir.mkdir(parents=True, exist_ok=True)
    # TensorBoard reads any file whose name holds "tfevents"; one fixed name, so a run finished again (resumed)
    # replaces its curves instead of adding a second copy of every step.
    events.write_scalars(log_dir / "events.out.tfevents.curves", time.time(), epochs, scalars, layout)


def write_hparams(folder: Path, hparams: dict[str, Any], metrics: dict[str, float], start_s: float, trial: str,
                  steps: tuple[int, int], differs: list[str] = ()) -> Path:
    """TensorBoard's hparams data for the HPARAMS tab in `folder` (the experiment's run): `hparams` (numbers,
    booleans, anything else as text; those named in `differs` marked so, listed first), `trial` its Trial ID,
    its headline `metrics` as scalars beside them, each at both `steps` (the first and last epoch) so that its
    chart draws a level line, not a lone dot."""
    hparams = {k: v if isinstance(v, (bool, int, float)) else str(v) for k, v in hparams.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    first = [events.record(events.event(now, file_version=events.FILE_VERSION))]
    summaries = [events.record(events.event(now, summary=s)) for s in events.hparams_summaries(hparams, list(metrics),
                                                                                                start_s, now, trial,
                                                                                                differs)]
    finite = {k: v for k, v in metrics.items() if v == v}
    scores = [events.record(events.event(now, step, finite)) for step in dict.fromkeys(steps)]
    # One fixed name: a resumed run replaces its session instead of adding a second one beside it.
    write_atomic(folder / "events.out.tfevents.hparams", b"".join(first + summaries + scores))
    return folder


def hparam(override: str) -> tuple[str, float | str | bool]:
    """`optim.lr=0.01` as ("optim.lr", 0.01): numbers and booleans typed (the HPARAMS tab sorts and filters
    them), anything else (`optim=sgd`, `model.hidden=[16]`) kept as written."""
    key, _, text = override.partition("=")
    key = key.lstrip("+")
    if text in ("true", "false"):
        return key, text == "true"
    try:
        return key, float(text)
    except ValueError:
        return key, text


def run_name(overrides: list[str], limit: int = 60) -> str:
    """A folder name that says a run's overrides (`optim.lr=0.00443,model.hidden=[16]`), short enough for
    TensorBoard's list of runs: numbers to 3 significant digits (the HPARAMS tab has them in full); characters
    other than letters, digits and `.=,+-_[]` become `_`; a name past `limit` keeps its start and a hash of the
    whole, so two long names stay apart."""
    import hashlib

    from runner.console import short_override

    name = re.sub(r"[^\w.=,+\-\[\]]", "_", ",".join(map(short_override, overrides))) or "defaults"
    if len(name) > limit:
        name = name[: limit - 9] + "~" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name
