"""Paired comparison of two runs scored on the same test units: the difference, its 95% interval and p-value.

Two runs made on the same data, plan and split seed tested the same rows in the same folds, so their
difference can be taken unit by unit, which cancels what the units have in common (an easy fold, a hard
row). The units are the headline's (headline.py): for k-fold the folds, each run's seeds averaged within a
fold (Nadeau–Bengio corrected when repeated); for one split (holdout, leave-one-out) the test rows, each
row's values averaged over the seeds. Only numpy and the csv module: `runner report` stays light.
"""

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runner.evaluate.metrics import member_scores, per_example
from runner.evaluate.stats import t_quantile, t_two_sided_p
from runner.rundir.spreadsheet import unescape

ALPHA = 0.05
# Metrics that are a function of a mean of per-unit MSEs, and so have a paired (delta-method) term per unit: on
# one split both (per row), over folds rmse (its headline is the root of the folds' mean MSE).
_DELTA = ("rmse", "r2")


@dataclass
class TestUnits:
    """A run's test metrics per unit: what a paired comparison with another run on the same units reads."""

    kind: str  # "folds" or "rows"
    keys: list[bytes]  # folds: each fold's sorted test rows; rows: each row number (the units, in order)
    values: dict[str, np.ndarray]  # metric -> one value per unit (rows: per-row values averaged over seeds)
    repeats: int = 1  # k-fold repeats (>1: Nadeau–Bengio)
    n_rows: int = 0  # distinct test rows
    n_test: float = 0.0  # mean test rows per fold
    seeds: int = 1  # members per unit
    extra: dict = field(default_factory=dict)  # rows: y_true per row (regression), for r2

    @property
    def over(self) -> str:
        """What the paired interval is over ("5 folds", "61 test rows")."""
        if self.kind == "rows":
            return f"{len(self.keys)} test rows"
        folds = len(self.keys)
        if self.repeats > 1:
            return f"{folds // self.repeats} folds x {self.repeats} repeats, Nadeau–Bengio corrected"
        return f"{folds} folds"


def read_units(run_dir: Path, task: str, split: str = "test") -> tuple[TestUnits | None, str]:
    """The test units (or, with `split="val"`, the validation units) of the run in `run_dir` from its
    predictions.csv, or (None, why not)."""
    path = Path(run_dir) / "predictions.csv"
    if not path.is_file():
        return None, "no predictions.csv"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = ([unescape(cell) for cell in line] for line in csv.reader(f))  # as runner wrote the labels
            header = next(reader)
            col = {name: i for i, name in enumerate(header)}
            if not {"member", "row", "y_true", "y_pred"} <= col.keys():
                return None, "predictions.csv lacks member, row, y_true or y_pred"
            at = col.get("split")
            if at is None and split != "test":
                return None, "predictions.csv has no split column (no validation predictions)"
            lines = [line for line in reader if at is None or line[at] == split]
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration, IndexError) as exc:
        return None, f"cannot read predictions.csv ({exc})"
    if not lines:
        return None, f"no {split} rows in predictions.csv"
    classes = [name[2:] for name in header if name.startswith("p_")]
    try:
        member = np.array([line[col["member"]] for line in lines])
        rows = np.array([int(float(line[col["row"]])) for line in lines])
        if task == "regression":
            y_true = np.array([float(line[col["y_true"]] or "nan") for line in lines])
            y_pred = np.array([float(line[col["y_pred"]] or "nan") for line in lines])
            proba, classes = None, None
        else:
            y_true = np.array([line[col["y_true"]] for line in lines])
            y_pred = np.array([line[col["y_pred"]] for line in lines])
            proba = (np.array([[float(line[col["p_" + c]] or "nan") for c in classes] for line in lines])
                     if classes else None)
            classes = classes or sorted(set(y_true) | set(y_pred))
            y_true, y_pred = _as_classes(y_true, classes), _as_classes(y_pred, classes)
    except (ValueError, IndexError) as exc:
        return None, f"cannot read predictions.csv ({exc})"
    repeats = len({line[col["repeat"]] for line in lines}) if "repeat" in col else 1
    try:
        return _units(task, member, rows, y_true, y_pred, proba, classes, repeats), ""
    except ValueError as exc:  # labels outside the p_ columns' classes: not a table runner wrote
        return None, f"cannot score predictions.csv ({exc})"


def table_units(table, task: str, classes=None) -> TestUnits:
    """The test units of a predictions table in memory (predictions.csv's columns: a run's, or a baseline's)."""
    repeats = int(table["repeat"].nunique()) if "repeat" in table else 1
    rows = table["row"].to_numpy().astype(int)
    if task == "regression":
        return _units(task, table["member"].to_numpy(), rows, table["y_true"].to_numpy(float),
                      table["y_pred"].to_numpy(float), None, None, repeats)
    classes = [str(c) for c in classes]
    proba = table[["p_" + c for c in classes]].to_numpy(float) if all("p_" + c in table for c in classes) else None
    return _units(task, table["member"].to_numpy(), rows, table["y_true"].astype(str).to_numpy(),
                  table["y_pred"].astype(str).to_numpy(), proba, classes, repeats)


def against(run, others: dict, metrics, task: str, classes=None) -> dict[str, dict]:
    """{name: {metric: the run minus `others[name]`, paired on their shared test units}} for predictions tables
    `run` and `others` (baselines fit on the same splits); metrics without a paired value are left out."""
    mine = table_units(run, task, classes)
    out = {}
    for name, table in others.items():
        theirs = table_units(table, task, classes)
        out[name] = {metric: d for metric in metrics if (d := paired_difference(mine, theirs, metric)) is not None}
    return out


def _as_classes(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    # "1.0" read back where the class is "1": match by number when the text does not match.
    if set(labels) <= set(classes):
        return labels
    by_number = {}
    for c in classes:
        try:
            by_number[float(c)] = c
        except ValueError:
            pass
    return np.array([by_number.get(_float(x), x) for x in labels])


def _float(x: str):
    try:
        return float(x)
    except ValueError:
        return x


def _units(task, member, rows, y_true, y_pred, proba, classes, repeats) -> TestUnits:
    ids, g = np.unique(member, return_inverse=True)
    row_sets = [np.unique(rows[g == i]) for i in range(len(ids))]
    keys, unit_of_member = np.unique(np.array([s.tobytes() for s in row_sets], dtype=object), return_inverse=True)
    n_rows = int(np.unique(rows).size)
    one_row_folds = all(s.size == 1 for s in row_sets)
    if len(keys) > 1 and not one_row_folds:
        scores = member_scores(task, g, len(ids), y_true, y_pred, proba, classes)
        values = {}
        for name, per_member in scores.items():
            per_member = np.asarray(per_member, float)
            with np.errstate(invalid="ignore"):
                values[name] = np.array([np.nanmean(per_member[unit_of_member == u])
                                         if np.isfinite(per_member[unit_of_member == u]).any() else np.nan
                                         for u in range(len(keys))])
        sizes = [np.frombuffer(k, dtype=rows.dtype).size for k in keys]
        return TestUnits("folds", list(keys), values, repeats, n_rows, float(np.mean(sizes)),
                         int(np.bincount(unit_of_member).max()))
    # One split (or leave-one-out's one-row folds): each row's per-row values averaged over its predictions.
    row_ids, r = np.unique(rows, return_inverse=True)
    counts = np.bincount(r)
    values = {name: np.bincount(r, z) / counts
              for name, z in per_example(task, y_true, y_pred, proba, classes).items()}
    extra = {"y_true": np.bincount(r, y_true) / counts} if task == "regression" else {}
    return TestUnits("rows", [int(x) for x in row_ids], values, 1, n_rows, float(n_rows),
                     int(counts.max()), extra)


def shared(a: TestUnits, b: TestUnits) -> str:
    """"" when `a` and `b` were tested on the same units, else why they cannot be paired."""
    if a.kind != b.kind:
        return f"scored over {a.over}, the best over {b.over}"
    if a.keys != b.keys:
        if a.kind == "rows":
            return f"tested other rows than the best ({len(a.keys)} vs {len(b.keys)}, {len(set(a.keys) & set(b.keys))} shared)"
        return "tested other folds than the best (another split seed or plan)"
    return ""


def paired_difference(a: TestUnits, b: TestUnits, metric: str) -> dict | None:
    """`a` minus `b` on `metric` over their shared units: {"mean", "se", "ci95", "p", "n", "over"}, or None where
    the metric has no paired value on these units (one split: a metric that is not a mean over rows)."""
    name = metric.split("/", 1)[-1]
    if shared(a, b):
        return None
    if name in _DELTA and "mse" in a.values and (a.kind == "rows" or name == "rmse"):
        return _delta(a, b, name)
    if name not in a.values or name not in b.values:
        return None
    d = a.values[name] - b.values[name]
    finite = d[np.isfinite(d)]  # a fold without a value (ROC AUC of a one-class fold) drops out of both
    return _test(finite, float(finite.mean()) if finite.size else math.nan, a)


def _delta(a: TestUnits, b: TestUnits, name: str) -> dict | None:
    """rmse (over rows or folds) and r2 (over rows) by the delta method: each is a smooth function of the mean
    squared error, as the headline computes them (k-fold RMSE: the root of the folds' mean MSE)."""
    za, zb = a.values["mse"], b.values["mse"]
    mse_a, mse_b = float(za.mean()), float(zb.mean())
    if name == "rmse":
        if mse_a <= 0 or mse_b <= 0:
            return None
        ra, rb = math.sqrt(mse_a), math.sqrt(mse_b)
        return _test(za / (2 * ra) - zb / (2 * rb), ra - rb, a)
    var_y = float(np.var(a.extra["y_true"]))
    if var_y <= 0:
        return None
    return _test(-(za - zb) / var_y, -(mse_a - mse_b) / var_y, a)


def _test(d: np.ndarray, estimate: float, units: TestUnits) -> dict | None:
    """Student's t on the per-unit differences `d` (their mean's SE; Nadeau–Bengio for repeated folds)."""
    d = d[np.isfinite(d)]
    n = int(d.size)
    out = {"mean": estimate, "se": None, "ci95": None, "p": None, "n": n, "over": units.over}
    if n < 2 or not math.isfinite(estimate):
        return out
    var = float(d.var(ddof=1))
    if units.kind == "folds" and units.repeats > 1:
        se = math.sqrt((1 / n + units.n_test / (units.n_rows - units.n_test)) * var)
    else:
        se = math.sqrt(var / n)
    # The estimate, not d's mean: for rmse the delta method's d = z/(2·rmse) has mean rmse/2, not rmse.
    if se == 0:
        p = 1.0 if estimate == 0 else 0.0  # every unit differs by the same amount
    else:
        p = t_two_sided_p(estimate / se, n - 1)
    q = t_quantile(0.975, n - 1)
    out.update(se=se, ci95=[estimate - q * se, estimate + q * se], p=p)
    return out
