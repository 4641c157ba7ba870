"""`runner report`: one comparison table over finished runs and Hydra multiruns, best first."""

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner import rundir
from runner.errors import RunnerError
from runner.evaluate.names import default_metric, higher_is_better
from runner.evaluate.paired import ALPHA
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
from runner.evaluate.stats import Z95, _short, fmt_interval, holm

FORMATS = ("table", "md", "csv", "json")
# `same`: its paired test difference from the best is not significant after Holm's adjustment; `better`: the test
# says it beats the validation pick (rare, and no reason to pick it: that would select on test).
BEST, SAME, WORSE, BETTER, NOT_PAIRED, MISSING = "best", "same", "worse", "better", "not paired", "n/a"
_SYMBOL = {BEST: "★ ", SAME: "≈ ", WORSE: "", BETTER: "▲ ", NOT_PAIRED: "· ", MISSING: ""}
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


def overlaps(a, b) -> bool:
    """Whether two intervals (lo, hi) share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def units_of(c: Comparison, path: str, split: str = "test"):
    """(the run's TestUnits, why none) from its predictions.csv (`split`: its test or val rows), read once per
    comparison."""
    from runner.evaluate.paired import read_units

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
    from runner.evaluate.paired import paired_difference, shared

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
    from runner.evaluate.paired import paired_difference, shared

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


def _label(metric: str) -> str:
    name = metric.split("/", 1)[-1]
    arrow = "→0" if name == "mean_error" else ("↑" if higher_is_better(name) else "↓")
    return f"{name} {arrow}"


def _title(c: Comparison) -> str:
    n = len(c.rows)
    how = "validation" if c.by_validation else "test"
    title = f"{n} run{'s' * (n != 1)} compared by {how} {_label(c.metric)}, best first"
    return f"{c.data}: {title}" if c.data else title


def caption_lines(c: Comparison, folded: bool = False) -> list[str]:
    """What the table's order, marks and ± mean, what is constant, and which jobs have no results;
    `folded`: the table has no n and over columns (they are the same in every run)."""
    name = c.metric.split("/", 1)[-1]
    if c.by_validation:
        lines = [f"Ordered by validation {name}; the test columns were scored once, after selection. "
                 "The val interval is over each run's members, or its validation rows when it is one model."]
    else:
        lines = [f"No validation score was available: rows are ordered by TEST {name}, for information only "
                 "(choosing a configuration by its test score overfits the test set)."]
    paired = [r for r in c.rows if r["vs_best"]]
    if paired:
        over = paired[0]["vs_best"]["over"]
        lines.append(f"Δ: this run minus the best (★) on TEST {name}, paired over the units they share ({over}), with "
                     f"its 95% interval; p is Holm-adjusted over the {len(paired)} run{'s' * (len(paired) != 1)} compared.")
    if len(c.rows) > 1:
        lines.append("Marks: " + "; ".join(text for mark, text in LEGEND.items()
                                           if any(r["mark"] == mark for r in c.rows)) + ".")
    on_val = [r for r in c.rows if r.get("val_vs_best")]
    if on_val:
        apart = sum(r["val_vs_best"]["p"] < ALPHA for r in on_val)
        lines.append(f"On VALIDATION (the selection itself), paired the same way over "
                     f"{on_val[0]['val_vs_best']['over'].replace('test rows', 'validation rows')}: {apart} of "
                     f"{len(on_val)} run{'s' * (len(on_val) != 1)} differ from the selected one (Holm p < 0.05); "
                     "val_vs_best in the csv and json.")
    top = sum(r["mark"] in (BEST, SAME) for r in c.rows)
    if top > 1:
        lines.append(f"{top} of {len(c.rows)} runs share the top (★ and ≈): these data cannot tell them apart.")
    apart = [r for r in c.rows if r["mark"] == NOT_PAIRED]
    if apart:
        reasons = "; ".join(f"{r['run']}: {r['not_paired']}" for r in apart)
        lines.append(f"Not paired with the best: {reasons}.")
    nb = " (Nadeau–Bengio corrected where a run has it, for the order column)" if c.uses_nb else ""
    if folded:
        lines.append(f"Intervals are 95% over {c.rows[0]['over']} (n = {c.rows[0]['n']}) in every run{nb}.")
    else:
        lines.append(f"Intervals are 95% over the `over` column; n = how many values each is over{nb}.")
    if c.constant:
        lines.append("Same in every run: " + ", ".join(f"{k}={v}" for k, v in c.constant.items()) + ".")
    if c.incomplete:
        lines.append(incomplete_note(c))
    return lines


def incomplete_note(c: Comparison) -> str:
    """One line naming the jobs that did not finish, with the error each recorded in its status.json."""
    k = len(c.incomplete)
    jobs = []
    for path in c.incomplete:
        record = rundir.read_status(path) or {"status": "no results.json"}
        error = f": {record['error']}" if record.get("error") else ""
        jobs.append(f"{path} ({record.get('status')}{error})")
    return f"{k} job{'s' * (k != 1)} failed or unfinished, not ranked: " + "; ".join(jobs)


def _mark_text(mark: str, compact: bool = False) -> str:
    if compact:  # the symbol alone; a worse row is dimmed instead
        return _SYMBOL[mark].strip()
    return f"{_SYMBOL[mark]}{mark}"


def _header(c: Comparison, metrics: list[str], same_n_over: bool = False, compact: bool = False,
            p: bool = True, merged: bool = False) -> list[str]:
    val = [f"val {_label(c.metric)}"] if c.by_validation else []
    columns = short_names(c.columns) if compact else c.columns
    columns = ["settings"] if merged and columns else columns
    delta = ["Δ test"] if compact else [f"Δ test {c.metric.split('/', 1)[-1]}", *(["p"] if p else [])]
    n_over = [] if same_n_over else ["over"] if merged else ["n", "over"]  # merged: `over` says n
    return ["" if compact else "vs best", "run", *columns, *val, *delta, *(_label(m) for m in metrics), *n_over]


def fmt_delta(d: dict | None, digits: int = 3, compact: bool = False) -> str:
    """A paired difference as "-0.012 ± 0.019" ("-.012±.019" compact); "" when there is none."""
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return ""

    def signed(x):
        text = f"{x:+.{digits}f}"
        return text[0] + text[2:] if compact and text[1:].startswith("0.") else text

    if not d.get("ci95"):
        return signed(d["mean"])
    half = (d["ci95"][1] - d["ci95"][0]) / 2  # mean ± t·SE: symmetric
    return f"{signed(d['mean'])}±{_short(half, digits)}" if compact else f"{signed(d['mean'])} ± {half:.{digits}f}"


def _fmt_p(p) -> str:
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def short_names(keys: list[str]) -> list[str]:
    """Each dotted key by its shortest trailing part that no other key ends with ("optim.lr" -> "lr")."""
    out = []
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts) - 1, -1, -1):
            tail = ".".join(parts[i:])
            if not any(k != key and (k == tail or k.endswith("." + tail)) for k in keys):
                break
        out.append(tail)
    return out


def _short_value(value: str) -> str:
    """A searched number to 4 significant digits ("0.0044303752" -> "0.00443"); other settings as they are."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return value if number.is_integer() and "e" not in str(value).lower() else f"{number:.3g}"


def _cells(c: Comparison, row: dict, metrics: list[str], compact: bool = False, same_n_over: bool = False,
           p: bool = True, merged: bool = False):
    val = [fmt_interval(row["validation"], compact=compact)] if c.by_validation else []
    n_over = [] if same_n_over else [str(row["over"] or "")] if merged else [str(row["n"] or ""),
                                                                             str(row["over"] or "")]
    settings = [_short_value(row["overrides"][k]) if compact else row["overrides"][k] for k in c.columns]
    if merged and settings:  # one cell of name=value words, which wraps
        settings = [" ".join(f"{k}={v}" for k, v in zip(short_names(c.columns), settings))]
    delta = [fmt_delta(row["vs_best"], compact=compact)]
    if not compact and p:
        delta.append(_fmt_p((row["vs_best"] or {}).get("p")))
    return [_mark_text(row["mark"], compact), row["run"], *settings, *val, *delta,
            *(fmt_interval(row["metrics"][m], compact=compact) for m in metrics), *n_over]


def to_table(c: Comparison, width: int | None = None):
    """A rich renderable: the table, best first (★, its sort cell bold), then its notes. With `width`,
    as many test metrics as fit (the sort metric always), in a compact layout if even that is too wide."""
    from rich.console import Console, Group
    from rich.measure import Measurement
    from rich.text import Text

    console = Console(width=10_000)  # measure the natural width: Measurement clamps to the console's
    fits = lambda t: width is None or Measurement.get(console, console.options, t).maximum <= width  # noqa: E731
    same_n_over = len({(r["n"], r["over"]) for r in c.rows}) == 1
    # Too wide even then: the settings as one column whose cells wrap (numbers never wrap or get cut).
    fits_wrapped = lambda t: _fit_wrapping(t, width, console)  # noqa: E731
    layouts = [(k, compact, False) for compact in (False, True) for k in range(len(c.metrics), 0, -1)]
    layouts += [(0, True, False)] if c.by_validation else []  # a wide search: the validation column it is ranked by
    layouts += [(k, True, True) for k in range(len(c.metrics), -1 if c.by_validation else 0, -1)] if c.columns else []
    for k, compact, merged in layouts:
        table = _table(c, c.metrics[:k], compact, compact and same_n_over, merged)
        if fits(table) or merged and fits_wrapped(table):
            break
    notes = caption_lines(c, folded=compact and same_n_over)
    left_out = [m.split("/", 1)[-1] for m in c.metrics[k:]]
    if left_out:
        notes.append(f"Not shown for width: {', '.join(left_out)} (--format md, csv or json has every metric).")
    return Group(table, Text("\n".join(notes), style="dim"))


def _fit_wrapping(table, width: int, console) -> bool:
    """Give `table`'s wrapping columns widths (each at least its longest word) so the table fits `width`;
    False if even their longest words do not fit. Rich would narrow them all alike and break words."""
    from rich.measure import Measurement
    from rich.text import Text

    wrapping = [col for col in table.columns if not col.no_wrap]
    words = {id(col): [Text.from_markup(str(cell)).plain for cell in col._cells] for col in wrapping}
    widest = {id(col): max([len(col.header), *map(len, words[id(col)])]) for col in wrapping}
    for col in wrapping:
        col.width = max([len(w) for cell in words[id(col)] for w in cell.split()] + [len(col.header.split()[0])
                                                                                     if col.header.strip() else 1])
    slack = width - Measurement.get(console, console.options, table).maximum
    if slack < 0:
        return False
    for col in wrapping:  # the settings first: the run's id and `over` are short
        grow = min(slack, widest[id(col)] - col.width)
        col.width += grow
        slack -= grow
    return True


def _table(c: Comparison, metrics: list[str], compact: bool = False, same_n_over: bool = False,
           merged: bool = False):
    from rich import box
    from rich.table import Table

    # Compact: no vertical rules, so a sweep's table fits an 80-column terminal.
    table = Table(title=_title(c), box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, pad_edge=not compact,
                  collapse_padding=compact)
    sort_col = 2 + (min(len(c.columns), 1) if merged else len(c.columns))  # the validation column, else Δ
    extra = 1 if compact else 2  # Δ (and p)
    for i, name in enumerate(_header(c, metrics, same_n_over, compact, merged=merged)):
        numeric = sort_col <= i < sort_col + len(metrics) + c.by_validation + extra + (not merged)  # and n
        # Only the run's path, `over` and merged settings may wrap; intervals and settings cut short would mislead.
        wraps = i == 1 or name == "over" or merged and i == 2 and bool(c.columns)
        table.add_column(name, justify="right" if numeric else "left", no_wrap=not wraps,
                         overflow="fold" if wraps else "ellipsis")
    bold = sort_col if c.by_validation else sort_col + extra  # the column the rows are ordered by
    for i, row in enumerate(c.rows):
        cells = _cells(c, row, metrics, compact, same_n_over, merged=merged)
        if row["mark"] == BEST:
            cells[bold] = f"[bold]{cells[bold]}[/bold]"
        if row["mark"] == NOT_PAIRED and c.rows[i - 1]["mark"] != NOT_PAIRED:
            table.add_section()  # grouped apart: not compared with the best
        table.add_row(*cells, style="dim" if row["mark"] == WORSE else None)
    return table


def _every_metric_table(c: Comparison, title: str):
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, caption="95% intervals; p unadjusted (one comparison each)")
    for name in ("test metric", "Δ ± 95%", "p"):
        table.add_column(name, justify="left" if name == "test metric" else "right", no_wrap=True)
    for m, d in every_metric(c):
        table.add_row(_label(m), fmt_delta(d) or "n/a (not a mean over rows)", _fmt_p((d or {}).get("p")))
    return table


def to_markdown(c: Comparison) -> str:
    """A Markdown table, the best row in bold, the caption as notes below it."""
    header = _header(c, c.metrics)
    lines = [f"**{_title(c)}**", "", "| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if i > 1 + len(c.columns) and h != "over" else "---"
                               for i, h in enumerate(header)) + " |"]
    for row in c.rows:
        cells = _cells(c, row, c.metrics)
        if row["mark"] == BEST:
            cells = [f"**{x}**" if x else x for x in cells]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines + [""] + caption_lines(c)) + "\n"


def to_records(c: Comparison) -> list[dict]:
    """The rows as plain dicts (what `--format json` prints): rank, mark, run, overrides, intervals, n, over."""
    records = []
    for rank, row in enumerate(c.rows, 1):
        record = {"rank": rank, "mark": row["mark"], "run": row["run"], "path": row["path"],
                  "overrides": dict(row["overrides"]),
                  "sorted_by": f"{'val' if c.by_validation else 'test'}/{c.metric.split('/', 1)[-1]}"}
        if c.by_validation:
            record["validation"] = {c.metric.split("/", 1)[-1]: _plain(row["validation"])}
        record["vs_best"] = _vs_best_record(c, row)
        if row.get("val_vs_best"):
            d = row["val_vs_best"]
            record["val_vs_best"] = {"metric": f"val/{c.metric.split('/', 1)[-1]}", "mean": d["mean"],
                                     "ci95": d["ci95"], "p": d["p"], "p_unadjusted": d["p_unadjusted"], "n": d["n"],
                                     "over": d["over"].replace("test rows", "validation rows"),
                                     "p_adjustment": "Holm"}
        if rank == 2 and len(c.rows) == 2 and row["vs_best"]:
            record["vs_best_every_metric"] = {m: d and {k: d[k] for k in ("mean", "ci95", "p", "n", "over")}
                                              for m, d in every_metric(c)}
        record["metrics"] = {m: _plain(row["metrics"][m]) for m in c.metrics}
        record.update(n=row["n"], over=row["over"])
        records.append(record)
    return records


def _vs_best_record(c: Comparison, row: dict) -> dict | None:
    d = row["vs_best"]
    if row["mark"] == NOT_PAIRED:
        return {"not_paired": row["not_paired"]}
    if not d:
        return None
    return {"metric": c.metric, "mean": d["mean"], "ci95": d["ci95"], "p": d["p"], "p_unadjusted": d["p_unadjusted"],
            "n": d["n"], "over": d["over"], "p_adjustment": "Holm"}


def _plain(d: dict | None) -> dict | None:
    if d is None:
        return None
    return {k: d.get(k) for k in ("mean", "se", "ci95", "n") if k in d} | (
        {"ci95_nb": d["ci95_nb"]} if d.get("ci95_nb") else {})


def to_json(c: Comparison) -> str:
    """`to_records` as JSON text."""
    return json.dumps(to_records(c), indent=2, allow_nan=False) + "\n"


def to_csv(c: Comparison) -> str:
    """One CSV line per run: rank, mark, run, overrides, then mean, se and ci95 bounds per metric, n, over, path."""
    metrics = ([f"val/{c.metric.split('/', 1)[-1]}"] if c.by_validation else []) + c.metrics
    header = ["rank", "mark", "run", *c.columns, "vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]
    for m in metrics:
        header += [m, f"{m}_se", f"{m}_ci95_lo", f"{m}_ci95_hi"]
    header += ["n", "over", "path", "vs_best_note", "val_vs_best", "val_vs_best_lo", "val_vs_best_hi",
               "val_vs_best_p"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for rank, row in enumerate(c.rows, 1):
        line = [rank, row["mark"], row["run"], *(row["overrides"][k] for k in c.columns)]
        d = row["vs_best"] or {}
        lo, hi = d.get("ci95") or (None, None)
        line += [_num(d.get("mean")), _num(lo), _num(hi), _num(d.get("p"))]
        values = ([row["validation"]] if c.by_validation else []) + [row["metrics"][m] for m in c.metrics]
        for d in values:
            d = d or {}
            lo, hi = d.get("ci95") or (None, None)
            line += [_num(d.get("mean")), _num(d.get("se")), _num(lo), _num(hi)]
        line += [row["n"] if row["n"] is not None else "", row["over"] or "", row["path"], row["not_paired"]]
        d = row.get("val_vs_best") or {}
        lo, hi = d.get("ci95") or (None, None)
        line += [_num(d.get("mean")), _num(lo), _num(hi), _num(d.get("p"))]
        writer.writerow(line)
    return out.getvalue()


def _num(x) -> str:
    return "" if x is None else repr(float(x))


def every_metric(c: Comparison) -> list[tuple[str, dict | None]]:
    """Two runs: the second minus the first (the best) on every test metric, paired over their shared units
    (one comparison each, so unadjusted); [] unless the comparison has exactly two rows that pair."""
    from runner.evaluate.paired import paired_difference

    if len(c.rows) != 2 or not c.rows[1]["vs_best"]:
        return []
    best, other = (units_of(c, r["path"])[0] for r in c.rows)
    return [(m, paired_difference(other, best, m)) for m in c.metrics]


def every_metric_lines(c: Comparison) -> list[str]:
    """`every_metric` as text lines (a Markdown table), or [] when there is none."""
    pairs = every_metric(c)
    if not pairs:
        return []
    first, second = c.rows[0]["run"], c.rows[1]["run"]
    over = c.rows[1]["vs_best"]["over"]
    lines = [f"**{second} minus {first} on every test metric, paired over their shared units ({over})** "
             "(95% intervals, p unadjusted)",
             "", "| metric | Δ ± 95% | p |", "| --- | ---: | ---: |"]
    for m, d in pairs:
        cell = fmt_delta(d) or "n/a (not a mean over test rows: no paired test on one split)"
        lines.append(f"| {_label(m)} | {cell} | {_fmt_p((d or {}).get('p'))} |")
    return lines


def print_comparison(c: Comparison, fmt: str = "table", file=None) -> None:
    """Print `c` in `fmt` ("table", "md", "csv" or "json") to `file` (stdout); two runs also get their paired
    difference on every metric (table and md)."""
    file = file or sys.stdout
    if fmt == "table":
        from rich.console import Console

        console = Console(file=file)
        console.print(to_table(c, console.width))
        lines = every_metric_lines(c)
        if lines:
            console.print()
            console.print(_every_metric_table(c, lines[0].strip("*").split("**")[0]))
        return
    text = {"md": to_markdown, "csv": to_csv, "json": to_json}[fmt](c)
    if fmt == "md" and every_metric_lines(c):
        text += "\n" + "\n".join(every_metric_lines(c)) + "\n"
    file.write(text)
    if fmt in ("csv", "json") and c.incomplete:
        # Keep stdout parseable; the note about failed jobs goes beside it.
        print(incomplete_note(c), file=sys.stderr)
