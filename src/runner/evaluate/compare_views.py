"""How a `runner report` comparison is shown: the rich table fitted to the terminal, markdown, csv, json,
its caption and legend (runner.evaluate.compare builds the Comparison and its marks)."""

import csv
import io
import json
import math
import sys

from runner import rundir
from runner.evaluate.compare import (
    SYMBOL,
    BEST,
    LEGEND,
    NOT_PAIRED,
    SAME,
    WORSE,
    Comparison,
    units_of,
)
from runner.config.metric_names import higher_is_better
from runner.evaluate.paired import ALPHA, paired_difference
from runner.evaluate.stats import _short, fmt_interval
from runner.rundir.spreadsheet import cell

FORMATS = ("table", "md", "csv", "json")


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
        return SYMBOL[mark].strip()
    return f"{SYMBOL[mark]}{mark}"


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
    """A Markdown table, the best row's ranking score in bold (as the terminal's table has it: only the score it is
    best on, not the other metrics, where another run may be better), the caption as notes below it."""
    header = _header(c, c.metrics)
    lines = [f"**{_title(c)}**", "", "| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if i > 1 + len(c.columns) and h != "over" else "---"
                               for i, h in enumerate(header)) + " |"]
    ranked_by = 2 + len(c.columns) + (0 if c.by_validation else 2)  # the validation column, else past Δ and p
    for row in c.rows:
        cells = _cells(c, row, c.metrics)
        if row["mark"] == BEST and cells[ranked_by]:
            cells[ranked_by] = f"**{cells[ranked_by]}**"
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
    """One CSV line per run: rank, mark, run, overrides, then mean, se and ci95 bounds per metric, n, over, path;
    text safe in a spreadsheet (runner.rundir.spreadsheet: an override's value could be a formula)."""
    metrics = ([f"val/{c.metric.split('/', 1)[-1]}"] if c.by_validation else []) + c.metrics
    header = ["rank", "mark", "run", *c.columns, "vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]
    for m in metrics:
        header += [m, f"{m}_se", f"{m}_ci95_lo", f"{m}_ci95_hi"]
    header += ["n", "over", "path", "vs_best_note", "val_vs_best", "val_vs_best_lo", "val_vs_best_hi",
               "val_vs_best_p"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([cell(v) for v in header])
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
        writer.writerow([cell(v) for v in line])
    return out.getvalue()


def _num(x) -> str:
    return "" if x is None else repr(float(x))


def every_metric(c: Comparison) -> list[tuple[str, dict | None]]:
    """Two runs: the second minus the first (the best) on every test metric, paired over their shared units
    (one comparison each, so unadjusted); [] unless the comparison has exactly two rows that pair."""
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
