"""No interval anywhere in results.json leaves its metric's range: a property test over random predictions tables
(every plan's shape, near-perfect and near-useless members), the headlines and everything under `others`."""

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.config.metric_names import metric_range
from runner.evaluate.headline import summarize


def _table(task, plan, seeds, n, skill, seed) -> pd.DataFrame:
    """Test predictions of `seeds` members per split; `skill` near 1: members nearly always right."""
    rng = np.random.default_rng(seed)
    classes = 2 if task == "binary" else 3
    y = rng.normal(size=n) if task == "regression" else rng.integers(0, classes, size=n)
    if plan == "holdout":
        splits = [(0, 0, np.arange(n))]
    else:
        repeats = 2 if plan == "repeated" else 1
        splits = [(r, f, rows) for r in range(repeats)
                  for f, rows in enumerate(np.array_split(rng.permutation(n), 3))]
    frames = []
    for repeat, fold, rows in splits:
        for s in range(seeds):
            member = len(frames)
            frame = pd.DataFrame({"member": member, "fold": fold, "repeat": repeat, "seed": s, "row": rows})
            if task == "regression":
                frame["y_true"] = y[rows]
                frame["y_pred"] = y[rows] + rng.normal(scale=1 - skill + 1e-3, size=len(rows))
            else:
                logits = rng.normal(size=(len(rows), classes))
                logits[np.arange(len(rows)), y[rows]] += 10 * skill
                p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
                frame["y_true"], frame["y_pred"] = y[rows], p.argmax(1)
                for c in range(classes):
                    frame[f"p_{c}"] = p[:, c]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _intervals(metrics: dict):
    """(metric name, where, interval) for every interval under a results.json metrics section."""
    for name, d in metrics.items():
        for where, entry in [("headline", d), *d.get("others", {}).items()]:
            for key in ("ci95", "ci95_t"):
                if entry.get(key) is not None:
                    yield name, f"{where}.{key}", entry[key]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(["binary", "multiclass", "regression"]),
       plan=st.sampled_from(["holdout", "kfold", "repeated"]), seeds=st.integers(1, 3), n=st.integers(12, 40),
       skill=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]), seed=st.integers(0, 2**16))
def test_no_interval_leaves_its_metrics_range(task, plan, seeds, n, skill, seed):
    table = _table(task, plan, seeds, n, skill, seed)
    classes = None if task == "regression" else [str(c) for c in range(2 if task == "binary" else 3)]
    if classes:
        table["y_true"], table["y_pred"] = table["y_true"].astype(str), table["y_pred"].astype(str)
    majority = table.assign(y_pred=table["y_true"].mode()[0]) if classes else table.assign(y_pred=0.0)
    summary = summarize(table, task, classes, {"majority": majority}, resamples=50)
    checked = 0
    for section in (summary["metrics"], *summary["baselines"].values()):
        for name, where, (lo, hi) in _intervals(section):
            low, high = metric_range(name, task)
            assert low <= lo <= hi <= high or (math.isnan(lo) and math.isnan(hi)), (name, where, lo, hi)
            checked += 1
    assert checked > 0


def test_a_members_spread_near_one_is_clipped_not_past_one():
    # the audit's case: precision's members' interval (others) reached 1.0059
    from runner.evaluate.headline import summarize_table

    table = _table("binary", "holdout", 3, 30, 0.99, 3)
    table.loc[table.member == 0, "y_pred"] = 1 - table.loc[table.member == 0, "y_true"]  # one bad seed: wide spread
    table["y_true"], table["y_pred"] = table["y_true"].astype(str), table["y_pred"].astype(str)
    out = summarize_table(table, "binary", ["0", "1"], resamples=50)
    members = out["test/precision"]["others"]["members"]
    assert members["ci95"][1] == 1.0 and members["ci95_t"][1] == 1.0
    assert members["interval"] == "mean ± 1.96·SE, clipped to [0, 1]"
