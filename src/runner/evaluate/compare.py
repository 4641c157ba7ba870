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
from runner.evaluate.stats import Z95, fmt_interval

FORMATS = ("table", "md", "csv", "json")
BEST, SAME, WORSE, NO_INTERVAL, MISSING = "best", "not distinguishable", "worse", "no interval", "n/a"
_SYMBOL = {BEST: "★ ", SAME: "≈ ", WORSE: "", NO_INTERVAL: "? ", MISSING: ""}


@dataclass
class Comparison:
    """The rows of a comparison table, best first, and what the caption must say about them."""

    rows: list[dict]  # run, path, overrides, metrics, selection, mark, n, over
    columns: list[str]  # override keys whose values differ between runs
    constant: dict[str, str]  # override keys set to one value in every run
    metrics: list[str]  # test metrics shown, the sort metric first ("test/accuracy", ...)
    metric: str  # the sort metric ("test/accuracy")
    by_validation: bool  # rows are ordered by the validation score (else by test, for information only)
    incomplete: list[Path] = field(default_factory=list)  # job dirs without results.json
    uses_nb: bool = False  # some interval compared is Nadeau–Bengio corrected
    data: str = ""  # what the runs were made on, when a report shows several datasets' tables


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
    _mark(rows)
    metrics = [metric] + [m for m in metrics if m != metric]
    uses_nb = any((r["selection"] or {}).get("ci95_nb") for r in rows)
    return Comparison(rows, columns, constant, metrics, metric, by_validation, incomplete, uses_nb)


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


def _mark(rows: list[dict]) -> None:
    """Mark the first (best) row; others: not distinguishable if their 95% interval overlaps the best's."""
    if not rows:
        return
    best = interval(rows[0]["selection"])
    for i, row in enumerate(rows):
        own = interval(row["selection"])
        if (row["selection"] or {}).get("mean") is None:
            row["mark"] = MISSING
        elif i == 0:
            row["mark"] = BEST
        elif best is None or own is None:
            row["mark"] = NO_INTERVAL
        else:
            row["mark"] = SAME if overlaps(best, own) else WORSE


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
    lines.append("★ best; ≈ not distinguishable: its 95% interval overlaps the best's "
                 "(a conservative check, not a test); worse (dimmed): no overlap.")
    top = sum(r["mark"] in (BEST, SAME) for r in c.rows)
    if top > 1:
        lines.append(f"{top} of {len(c.rows)} runs share the top (★ and ≈): these data cannot tell them apart.")
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


def _header(c: Comparison, metrics: list[str], same_n_over: bool = False, compact: bool = False) -> list[str]:
    val = [f"val {_label(c.metric)}"] if c.by_validation else []
    columns = short_names(c.columns) if compact else c.columns
    return ["" if compact else "vs best", "run", *columns, *val, *(_label(m) for m in metrics),
            *([] if same_n_over else ["n", "over"])]


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


def _cells(c: Comparison, row: dict, metrics: list[str], compact: bool = False, same_n_over: bool = False):
    val = [fmt_interval(row["validation"], compact=compact)] if c.by_validation else []
    n_over = [] if same_n_over else [str(row["n"] or ""), str(row["over"] or "")]
    settings = (_short_value(row["overrides"][k]) if compact else row["overrides"][k] for k in c.columns)
    return [_mark_text(row["mark"], compact), row["run"], *settings, *val,
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
    layouts = [(k, compact) for compact in (False, True) for k in range(len(c.metrics), 0, -1)]
    layouts += [(0, True)] if c.by_validation else []  # a wide search: the validation column it is ranked by
    for k, compact in layouts:
        table = _table(c, c.metrics[:k], compact, compact and same_n_over)
        if fits(table):
            break
    notes = caption_lines(c, folded=compact and same_n_over)
    left_out = [m.split("/", 1)[-1] for m in c.metrics[k:]]
    if left_out:
        notes.append(f"Not shown for width: {', '.join(left_out)} (--format md, csv or json has every metric).")
    return Group(table, Text("\n".join(notes), style="dim"))


def _table(c: Comparison, metrics: list[str], compact: bool = False, same_n_over: bool = False):
    from rich import box
    from rich.table import Table

    # Compact: no vertical rules, so a sweep's table fits an 80-column terminal.
    table = Table(title=_title(c), box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, pad_edge=not compact,
                  collapse_padding=compact)
    sort_col = 2 + len(c.columns)  # the validation column, else the first test metric
    for i, name in enumerate(_header(c, metrics, same_n_over, compact)):
        numeric = sort_col <= i < sort_col + len(metrics) + c.by_validation + 1  # the intervals and n
        # Only the run's path and `over` may wrap; intervals and settings cut short would mislead.
        wraps = i == 1 or name == "over"
        table.add_column(name, justify="right" if numeric else "left", no_wrap=not wraps,
                         overflow="fold" if wraps else "ellipsis")
    for row in c.rows:
        cells = _cells(c, row, metrics, compact, same_n_over)
        if row["mark"] == BEST:
            cells[sort_col] = f"[bold]{cells[sort_col]}[/bold]"
        table.add_row(*cells, style="dim" if row["mark"] == WORSE else None)
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
        record["metrics"] = {m: _plain(row["metrics"][m]) for m in c.metrics}
        record.update(n=row["n"], over=row["over"])
        records.append(record)
    return records


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
    header = ["rank", "mark", "run", *c.columns]
    for m in metrics:
        header += [m, f"{m}_se", f"{m}_ci95_lo", f"{m}_ci95_hi"]
    header += ["n", "over", "path"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for rank, row in enumerate(c.rows, 1):
        line = [rank, row["mark"], row["run"], *(row["overrides"][k] for k in c.columns)]
        values = ([row["validation"]] if c.by_validation else []) + [row["metrics"][m] for m in c.metrics]
        for d in values:
            d = d or {}
            lo, hi = d.get("ci95") or (None, None)
            line += [_num(d.get("mean")), _num(d.get("se")), _num(lo), _num(hi)]
        line += [row["n"] if row["n"] is not None else "", row["over"] or "", row["path"]]
        writer.writerow(line)
    return out.getvalue()


def _num(x) -> str:
    return "" if x is None else repr(float(x))


def print_comparison(c: Comparison, fmt: str = "table", file=None) -> None:
    """Print `c` in `fmt` ("table", "md", "csv" or "json") to `file` (stdout)."""
    file = file or sys.stdout
    if fmt == "table":
        from rich.console import Console

        console = Console(file=file)
        console.print(to_table(c, console.width))
        return
    text = {"md": to_markdown, "csv": to_csv, "json": to_json}[fmt](c)
    file.write(text)
    if fmt in ("csv", "json") and c.incomplete:
        # Keep stdout parseable; the note about failed jobs goes beside it.
        print(incomplete_note(c), file=sys.stderr)
