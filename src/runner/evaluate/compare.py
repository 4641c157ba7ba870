"""`runner report`'s comparison over finished runs and Hydra multiruns, best first: the runs, their paired marks
against the best (runner.evaluate.compare_views shows it as a table, markdown, csv or json)."""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import RunnerError
from runner.config.metric_names import default_metric, higher_is_better
from runner.evaluate.paired import ALPHA, paired_difference, read_units, shared
from runner.evaluate.runs import (
    DATA_FIELDS,
    Run,
    check_same_data,
    data_groups,
    describe_data,
    find_runs,
    load_run,
    setting_of,
)
from runner.evaluate.stats import Z95, holm

# `same`: its paired test difference from the best is not significant after Holm's adjustment; `better`: the test
# says it beats the validation pick (rare, and no reason to pick it: that would select on test).
BEST, SAME, WORSE, BETTER, NOT_PAIRED, MISSING = "best", "same", "worse", "better", "not paired", "n/a"
SYMBOL = {BEST: "★ ", SAME: "≈ ", WORSE: "", BETTER: "▲ ", NOT_PAIRED: "· ", MISSING: ""}
# The caption's legend, one entry per mark in the table (README's wording; summary.csv's `mark` holds the word).
LEGEND = {BEST: "★ best: first on the ranking score",
          SAME: "≈ same: not distinguishable from the best (adjusted p ≥ 0.05)",
          WORSE: "worse (dimmed): adjusted p < 0.05",
          BETTER: "▲ better: better on test than the validation pick (information, not a reason to pick it)",
          NOT_PAIRED: "· not paired: no shared test units or no paired test (listed below the others)",
          MISSING: "n/a: no ranking score"}


@dataclass
class Comparison:
    """The rows of a comparison table, best first, and what the caption must say about them."""

    rows: list[dict]  # run, path, overrides, metrics, selection, mark, vs_best, not_paired, n, over
    columns: list[str]  # override keys whose values differ between runs
    constant: dict[str, str]  # override keys set to one value in every run
    metrics: list[str]  # test metrics shown, the sort metric first ("test/accuracy", ...)
    metric: str  # the sort metric ("test/accuracy")
    by_validation: bool  # rows are ordered by the validation score (else by test, for information only)
    incomplete: list[Path] = field(default_factory=list)  # job dirs without results.json
    uses_nb: bool = False  # some interval compared is Nadeau–Bengio corrected
    data: str = ""  # what the runs were made on, when a report shows several datasets' tables
    task: str = ""
    units: dict = field(default_factory=dict, repr=False)  # path -> its TestUnits (None: not readable), read once


# ---------------------------------------------------------------- building the comparison


def compare(paths, metric: str | None = None) -> Comparison:
    """Compare the runs under `paths` on `metric` (default: the runs' selection metric), best first."""
    run_dirs, incomplete = find_runs(paths)
    runs = [load_run(p) for p in run_dirs]
    check_same_data(runs)
    metrics = list(dict.fromkeys(k for r in runs for k in r.results["metrics"]))
    metric = _sort_metric(runs, metrics, metric)
    lower_better = not higher_is_better(metric)
    validation = [_validation(r.results, metric) for r in runs]
    by_validation = all(v is not None for v in validation)

    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    settings = {k: [setting_of(r, k) for r in runs] for k in keys}
    columns = [k for k in keys if len(set(settings[k])) > 1]
    constant = {k: v[0] for k, v in settings.items() if k not in columns}

    names = _run_names(run_dirs)
    rows = []
    for i, run in enumerate(runs):
        selection = validation[i] if by_validation else run.results["metrics"].get(metric)
        rows.append({
            "run": names[i], "path": str(run.path),
            "overrides": {k: settings[k][i] for k in columns},
            "metrics": {m: run.results["metrics"].get(m) for m in metrics},
            "validation": validation[i],
            "selection": selection,
            "n": (run.results["metrics"].get(metric) or {}).get("n"),  # n and over describe the test columns
            "over": run.results.get("over"),
        })

    def badness(row):
        mean = (row["selection"] or {}).get("mean")
        if mean is None or not math.isfinite(mean):
            return (1, 0.0)
        if metric.split("/")[-1] == "mean_error":
            return (0, abs(mean))
        return (0, mean if lower_better else -mean)

    rows.sort(key=badness)  # stable: equal scores keep the order the runs were found in
    metrics = [metric] + [m for m in metrics if m != metric]
    uses_nb = any((r["selection"] or {}).get("ci95_nb") for r in rows)
    task = str(runs[0].results.get("task") or "")
    c = Comparison(rows, columns, constant, metrics, metric, by_validation, incomplete, uses_nb, task=task)
    _mark(c)
    return c


def compare_by_data(paths, metric: str | None = None) -> list[Comparison]:
    """One comparison per dataset, target and task found under `paths` (runs on different data never
    share a ranking); jobs that did not finish are noted under the last table."""
    run_dirs, incomplete = find_runs(paths)
    groups = data_groups([load_run(p) for p in run_dirs])
    if len(groups) == 1:
        return [compare(paths, metric)]
    comparisons = []
    apart = [k for k in DATA_FIELDS if len({str(data[k]) for data, _ in groups}) > 1]  # what tells the tables apart
    for data, members in groups:
        c = compare([r.path for r in members], metric)
        c.data = describe_data(data, apart)
        comparisons.append(c)
    comparisons[-1].incomplete = incomplete
    return comparisons


def _sort_metric(runs: list[Run], metrics: list[str], asked: str | None) -> str:
    """The test metric to order by: `asked`, else results.json's selection metric, else the task's default."""
    valid = [m.split("/", 1)[-1] for m in metrics]
    if asked is not None:
        name = asked.split("/", 1)[-1]
        if name not in valid:
            raise RunnerError(f"unknown metric {asked!r}; choose one of: {', '.join(valid)}")
        return f"test/{name}" if f"test/{name}" in metrics else metrics[valid.index(name)]
    first = runs[0]
    selection = first.results.get("selection")
    name = selection.get("metric") if isinstance(selection, dict) else selection
    name = name or first.results.get("selection_metric") or (first.config.get("eval") or {}).get("metric")
    if not name:
        try:
            name = default_metric(first.results.get("task", ""))
        except RunnerError:
            name = valid[0]
    name = str(name).split("/", 1)[-1]
    if name not in valid:
        return metrics[0]
    return f"test/{name}" if f"test/{name}" in metrics else metrics[valid.index(name)]


def _validation(results: dict, metric: str) -> dict | None:
    """The validation interval of `metric` from results.json's "validation" section, if it has one."""
    section = results.get("validation")
    if isinstance(section, dict) and isinstance(section.get("metrics"), dict):
        section = section["metrics"]
    if not isinstance(section, dict):
        return None
    name = metric.split("/", 1)[-1]
    for key in (f"val/{name}", name, f"validation/{name}"):
        d = section.get(key)
        if isinstance(d, dict) and d.get("mean") is not None:
            return d
    return None


def _run_names(paths: list[Path]) -> list[str]:
    """Each run's path relative to the folder they share ("0", "1", ... for one multirun)."""
    if len(paths) == 1:
        return [paths[0].name]
    root = Path(os.path.commonpath([str(p) for p in paths]))
    return [str(p.relative_to(root)) or p.name for p in paths]


def interval(d: dict | None) -> tuple[float, float] | None:
    """The 95% interval a comparison uses: Nadeau–Bengio corrected if present, else ci95, else mean ± 1.96·se."""
    if not d:
        return None
    for key in ("ci95_nb", "ci95"):
        pair = d.get(key)
        if pair and None not in pair:
            return float(pair[0]), float(pair[1])
    if d.get("mean") is not None and d.get("se") is not None:
        return d["mean"] - Z95 * d["se"], d["mean"] + Z95 * d["se"]
    return None


def units_of(c: Comparison, path: str, split: str = "test"):
    """(the run's TestUnits, why none) from its predictions.csv (`split`: its test or val rows), read once per
    comparison."""
    key = path if split == "test" else (path, split)
    if key not in c.units:
        c.units[key] = read_units(Path(path), c.task, split) if c.task else (None, "no task in results.json")
    return c.units[key]


def _worse(diff: float, metric: str, own: float | None, best: float | None) -> bool:
    """Whether a difference (this minus the best) on `metric` points the worse way."""
    name = metric.split("/")[-1]
    if name == "mean_error" and own is not None and best is not None:
        return abs(own) > abs(best)
    return diff < 0 if higher_is_better(name) else diff > 0


def _mark(c: Comparison) -> None:
    """Mark the first (best) row; pair every other row with it on the test units they share (Holm over the rows
    paired): `same` unless the adjusted p < 0.05. Rows that share no units with the best go below, not paired."""
    rows = c.rows
    for row in rows:
        row.update(vs_best=None, val_vs_best=None, not_paired="")
    if not rows:
        return
    scored = [r for r in rows if (r["selection"] or {}).get("mean") is not None]
    for row in rows:
        if row not in scored:
            row["mark"] = MISSING
    if not scored:
        return
    best = scored[0]
    best["mark"] = BEST

    best_units, why_not = units_of(c, best["path"])
    for row in scored[1:]:
        if best_units is None:
            row["not_paired"] = f"the best run: {why_not}"
            continue
        units, why = units_of(c, row["path"])
        why = why or shared(units, best_units)
        if why:
            row["not_paired"] = why
            continue
        d = paired_difference(units, best_units, c.metric)
        if d is None or d.get("p") is None:
            row["not_paired"] = (f"{c.metric.split('/', 1)[-1]} is not a mean over test rows: no paired test on "
                                 "one split" if d is None else f"fewer than 2 shared units ({d['n']})")
            continue
        row["vs_best"] = d
    paired = [r for r in scored[1:] if r["vs_best"]]
    for row, p in zip(paired, holm([r["vs_best"]["p"] for r in paired])):
        d = row["vs_best"]
        d["p_unadjusted"], d["p"] = d["p"], p
        own, top = (row["metrics"].get(c.metric) or {}).get("mean"), (best["metrics"].get(c.metric) or {}).get("mean")
        if p >= ALPHA:
            row["mark"] = SAME
        else:
            row["mark"] = WORSE if _worse(d["mean"], c.metric, own, top) else BETTER
    for row in scored[1:]:
        if row["not_paired"]:
            row["mark"] = NOT_PAIRED
    if c.by_validation:
        _pair_validation(c, best, paired)
    # Grouped apart: the best and the rows compared with it, then those that could not be, then those unscored.
    order = {BEST: 0, SAME: 0, WORSE: 0, BETTER: 0, NOT_PAIRED: 1, MISSING: 2}
    rows.sort(key=lambda r: order[r["mark"]])


def _pair_validation(c: Comparison, best: dict, rows: list[dict]) -> None:
    """The selection itself, tested the same way: each row paired on test is paired with the best on the
    validation units they share (`val_vs_best`, Holm over those paired), where both have validation predictions
    on the same units. It says whether validation could tell the runs apart; the marks stay the test's."""
    for row in c.rows:
        row["val_vs_best"] = None
    best_units, _ = units_of(c, best["path"], "val")
    if best_units is None:
        return
    found = []
    for row in rows:
        units, _ = units_of(c, row["path"], "val")
        if units is None or shared(units, best_units):
            continue
        d = paired_difference(units, best_units, c.metric)
        if d and d.get("p") is not None:
            row["val_vs_best"] = d
            found.append(row)
    for row, p in zip(found, holm([r["val_vs_best"]["p"] for r in found])):
        row["val_vs_best"]["p_unadjusted"], row["val_vs_best"]["p"] = row["val_vs_best"]["p"], p


# ---------------------------------------------------------------- rendering
