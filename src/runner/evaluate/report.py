"""Render a results dict as a rich table, Markdown, CSV and PNGs, and write them into a run directory."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from runner.console import status
from runner.config.metric_names import higher_is_better
from runner.evaluate import plots as drawing
from runner.evaluate.averaging_table import averaging_markdown
from runner.evaluate.stats import INVERSE_ROOT_MAX_RATIO, Z95, fmt_interval, fmt_range, t975
from runner.rundir.folder import write_atomic
from runner.rundir.spreadsheet import safe_frame


def _rows(results: dict) -> list[tuple[str, dict]]:
    """(name, {"test/<metric>": interval dict}) for the model, then each baseline."""
    return [(headline_name(results), results["metrics"]), *results.get("baselines", {}).items()]


def headline_name(results: dict) -> str:
    """What the headline scores: the model ("mlp"), or what combined its members ("greedy ensemble")."""
    return (results.get("headline") or {}).get("name") or results.get("model") or "model"


def each_member(results: dict) -> tuple[dict, str]:
    """The single members' mean test metrics and what their interval is over (the headline, unless an ensemble
    is the headline)."""
    d = results.get("each_member") or {}
    return d.get("metrics", results["metrics"]), d.get("over", results.get("over"))


def _label(metric: str, d: dict | None = None) -> str:
    """"accuracy ↑", "log_loss ↓", "mean_error →0"; a † marks a bootstrap percentile interval."""
    name = metric.split("/", 1)[-1]
    arrow = "→0" if name == "mean_error" else ("↑" if higher_is_better(name) else "↓")
    dagger = "†" if d and str(d.get("interval", "")).startswith("bootstrap") else ""
    return f"{name}{dagger} {arrow}"


def _best(metric: str, rows) -> int | None:
    return best_of(metric, [(m.get(metric) or {}).get("mean") for _, m in rows])


def best_of(metric: str, values) -> int | None:
    """Position of the best of `values` for `metric` (mean_error: nearest 0); None if all missing."""
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    if not np.isfinite(x).any():
        return None
    if metric.split("/")[-1] == "mean_error":
        x = np.abs(x)
    x = np.where(np.isfinite(x), x, -np.inf if higher_is_better(metric) else np.inf)
    return int(np.argmax(x) if higher_is_better(metric) else np.argmin(x))


def _name(results: dict) -> str:
    """"heart · mlp" (or just the model when the dataset is unknown)."""
    return " · ".join(str(x) for x in (results.get("dataset"), results.get("model") or "model") if x)


def _over_line(results: dict) -> str:
    n = next(iter(results["metrics"].values()), {}).get("n")
    return f"95% CI over {results.get('over') or 'members'}" + (f" (n = {n})" if n else "")


def _footnotes(results: dict) -> list[str]:
    notes = []
    methods = {str(d.get("interval", "")) for _, m in _rows(results) for d in m.values()}
    boot = sorted(i for i in methods if i.startswith("bootstrap"))
    if boot:
        notes.append(f"† {boot[0][0].upper()}{boot[0][1:]}: the 2.5% and 97.5% quantiles of the seed-averaged "
                     "metric; the others are mean ± 1.96·SE unless noted.")
    if any("Wilson" in i for i in methods):
        notes.append("accuracy: Wilson score interval (with the effective n of averaged values), inside [0, 1].")
    if any("Student's t" in i for i in methods):
        notes.append("Over folds the interval uses Student's t quantile (folds - 1 df) in place of 1.96.")
    if any("inverse-root scale" in i for i in methods):
        notes.append("MSE, MAE, log loss and 1 − R² over folds: mean/(1 ± t·SE/(2·mean))², the interval of "
                     "mean^(-1/2) (per-row losses are skewed: a low estimate comes with a small SE), the upper "
                     f"end at most {INVERSE_ROOT_MAX_RATIO:g}× the mean; RMSE: the root of the folds' mean MSE "
                     "and of that interval.")
    if any("floored" in i for i in methods):
        notes.append("SE floored: the folds scored more alike than their test rows allow, so the SE is the test "
                     "rows' (each row's values averaged over the members that tested it).")
    if any("Nadeau–Bengio" in i for i in methods):
        notes.append("Nadeau–Bengio: SE² = (1/J + n_test/n_train)·sd² over the J = k·repeats fold scores "
                     "(folds share training rows, so sd/√J is too small); n_train counts a fold's training "
                     "and validation rows.")
    clipped = [f"{name} {metric.split('/', 1)[-1]}" for name, m in _rows(results) for metric, d in m.items()
               if "clipped" in str(d.get("interval", ""))]
    if clipped:
        notes.append(f"Intervals cut at the metric's range: {', '.join(clipped)}.")
    for name, m in _rows(results):
        noted = [(metric.split("/", 1)[-1], d["note"]) for metric, d in m.items() if d.get("note")]
        zero = [(metric, note) for metric, note in noted if note.startswith("zero spread: all ")]
        if len(zero) > 1:  # one line for a model that scored the same everywhere on several metrics
            unit = zero[0][1].removeprefix("zero spread: all ").split(" scored ")[0]
            values = ", ".join(f"{metric} {note.rsplit(' scored ', 1)[-1]}" for metric, note in zero)
            notes.append(f"{name}: zero spread, all {unit} scored the same: {values}.")
            noted = [item for item in noted if item not in zero]
        notes += [f"{name} {metric}: {note}." for metric, note in noted]
    if any("members" in d.get("others", {}) for d in results["metrics"].values()):
        notes.append("The spread over members (seeds share test rows, so it is too narrow) is in results.json "
                     "(others).")
    if results.get("baselines"):
        notes.append("Baselines are fit once per split on its training rows and scored on the same test rows.")
    return notes


def results_table(results: dict) -> Table:
    """A rich table: one block per metric, the model then each baseline, best mean in bold; fits 80 columns."""
    rows = _rows(results)
    caption = ["bold = best per metric"]
    first = next(iter(results["metrics"].values()), {})
    n = first.get("n") or 0
    if 2 <= n < 30 and "Student's t" not in str(first.get("interval")):  # few values, yet a 1.96 interval
        caption.append(f"n = {n} is small: the t interval (ci95_t) is {t975(n - 1) / Z95:.2f}× wider")
    table = Table(title=f"{_name(results)}: test metrics, {_over_line(results)}",
                  caption="\n".join(["; ".join(caption)] + _footnotes(results)), caption_justify="left")
    for col in ("metric", "model", "estimate", "95% CI", "n"):
        table.add_column(col, justify="left" if col in ("metric", "model") else "right", no_wrap=True)
    for metric, first in results["metrics"].items():
        best = _best(metric, rows)
        for i, (name, m) in enumerate(rows):
            d = m.get(metric) or {}
            cells = [_estimate(d), fmt_range(d.get("ci95")), str(d.get("n", ""))]
            if i == best:
                cells[0] = f"[bold]{cells[0]}[/bold]"
            table.add_row(_label(metric, first) if i == 0 else "", name, *cells,
                          end_section=i == len(rows) - 1, style=None if i == 0 else "dim")
    return table


def _estimate(d: dict) -> str:
    """The estimate column: "0.663 ± 0.025" for a symmetric interval, the mean alone for an asymmetric one, whose
    bounds the 95% CI column beside it gives (not the interval twice)."""
    return fmt_interval(d).split(" [", 1)[0]


def report_markdown(results: dict) -> str:
    """A Markdown table: model and baselines as rows, metrics as columns, best mean per column in bold."""
    rows, metrics = _rows(results), list(results["metrics"])
    lines = [f"**{_name(results)}**: test metrics; {_over_line(results)}; bold = best per column.", "",
             "| model | " + " | ".join(_label(k, results["metrics"][k]) for k in metrics) + " |",
             "| --- |" + " ---: |" * len(metrics)]
    best = {k: _best(k, rows) for k in metrics}
    for i, (name, m) in enumerate(rows):
        cells = [fmt_interval(m.get(k)) for k in metrics]
        cells = [f"**{c}**" if best[k] == i else c for c, k in zip(cells, metrics)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines + [""] + _footnotes(results) + _confusion_markdown(results.get("confusion"))) + "\n"
    if results.get("averaging"):  # the weight averages beside the restored best, as their own section

        text += averaging_markdown(results)
    return text + paired_markdown(results) + _ensembles_markdown(results) + _experts_markdown(results.get("experts"))


def fmt_paired(d: dict | None, digits: int = 3) -> str:
    """A paired difference as "+0.011 [-0.001, +0.024], p 0.071"; "n/a" when there is none."""
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "n/a"
    if not d.get("ci95"):
        return f"{d['mean']:+.{digits}f}"
    lo, hi = d["ci95"]
    p = "<0.001" if d["p"] < 0.001 else f"{d['p']:.3f}"
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}], p {p}"


def paired_markdown(results: dict) -> str:
    """The run minus each baseline on the same test units (results.json's `vs_baselines`), every metric a column."""
    paired = results.get("vs_baselines")
    if not paired:
        return ""
    metrics = [k for k in results["metrics"] if any(k in d for d in paired.values())]
    over = next((d["over"] for row in paired.values() for d in row.values()), "")
    lines = ["", f"**Paired differences**: {headline_name(results)} minus each baseline on the same test "
             f"units ({over}): mean, 95% interval (Student's t), two-sided p (not adjusted for the comparisons).", "",
             f"| {headline_name(results)} minus | " + " | ".join(_label(k) for k in metrics) + " |",
             "| --- |" + " ---: |" * len(metrics)]
    for name, row in paired.items():
        lines.append(f"| {name} | " + " | ".join(fmt_paired(row.get(k)) for k in metrics) + " |")
    return "\n".join(lines) + "\n"


def paired_table(results: dict) -> Table | None:
    """A rich table of the run minus each baseline on the selection metric, paired on the same test units."""
    paired = results.get("vs_baselines")
    metric = f"test/{results['selection']['metric']}"
    if not paired or not any(metric in row for row in paired.values()):
        return None
    over = next(row[metric]["over"] for row in paired.values() if metric in row)
    table = Table(title=f"{headline_name(results)} minus each baseline, paired on the same test units "
                  f"({over})", title_justify="left")
    for col in ("baseline", _label(metric), "95% CI", "p"):
        table.add_column(col, justify="left" if col == "baseline" else "right", no_wrap=True)
    for name, row in paired.items():
        d = row.get(metric) or {}
        ci = "n/a" if not d.get("ci95") else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        p = "" if d.get("p") is None else "<0.001" if d["p"] < 0.001 else f"{d['p']:.3f}"
        table.add_row(name, "n/a" if d.get("mean") is None else f"{d['mean']:+.3f}", ci, p)
    return table


def _ensembles_markdown(results: dict) -> str:
    """The ensembles beside the single members: main metric with its interval, members, parameters, microseconds
    per predicted row, over what."""
    ensembles = results.get("ensembles")
    if not ensembles:
        return ""
    name = "rmse" if results["task"] == "regression" else "accuracy"

    def cost(seconds) -> str:
        return "" if seconds is None else f"{seconds * 1e6:.2f}"

    one = (ensembles.get("best single") or {}).get("inference_s_per_row")
    lines = ["", f"**Ensembles** (test {name}, mean [95% interval]; µs/row: prediction time per row)", "",
             "| model | " + name + " | members | parameters | µs/row | over |", "| --- | ---: | ---: | ---: | ---: | --- |",
             f"| each member | {fmt_interval(each_member(results)[0].get(f'test/{name}'))} | 1 | "
             f"{results.get('parameters_per_member', '')} | {cost(one)} | {each_member(results)[1]} |"]
    for how, d in ensembles.items():
        lines.append(f"| {how} | {fmt_interval(d['metrics'].get(f'test/{name}'))} | {d['members']} | "
                     f"{d.get('parameters', '')} | {cost(d.get('inference_s_per_row'))} | {d.get('over', '')} |")
    greedy = ensembles.get("greedy")
    if greedy and greedy.get("vs"):
        bags = f", {greedy['bags']} bags of half the members" if greedy.get("bags", 1) > 1 else ""
        lines += ["", f"Greedy selection ({greedy['rounds']} rounds{bags} on {greedy['selected_on']}, each split's own "
                  "validation rows; members and weights per split in ensemble.json or results.json) minus:", ""]
        lines += [f"- {other}: test {name} {fmt_paired(d.get(f'test/{name}'))} "
                  f"({d.get(f'test/{name}', {}).get('over', '')})"
                  for other, d in greedy["vs"].items()]
    return "\n".join(lines) + "\n"


def _experts_markdown(experts: dict | None) -> str:
    """A mixture of experts' gate on the test rows: each expert's share of the gate mass, and its entropy."""
    if not experts:
        return ""
    shares = ", ".join(f"expert {k}: {v:.1%}" for k, v in enumerate(experts["usage"]))
    return (f"\n**Experts** (gate on the test rows, mean over members): {shares}; gate entropy "
            f"{experts['entropy']:.3f} nats; the largest share of any member {experts['max_share']:.1%}.\n")


def _confusion_markdown(confusion: dict | None) -> list[str]:
    """The confusion matrix as counts with the row-normalised share beside each count."""
    if not confusion:
        return []
    classes = confusion["classes"]
    lines = ["", f"Confusion matrix ({confusion['over']}; rows: true class, columns: predicted; "
                 "count and share of the row):", "",
             "| true \\ predicted | " + " | ".join(classes) + " |", "| --- |" + " ---: |" * len(classes)]
    for c, counts, shares in zip(classes, confusion["counts"], confusion["row_normalized"]):
        cells = [f"{n} ({'n/a' if share is None or share != share else f'{share:.2f}'})"
                 for n, share in zip(counts, shares)]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def report_frame(results: dict) -> pd.DataFrame:
    """One row per (model or baseline, metric) with mean, sd, se, both intervals, n, how and over what."""
    records = []
    for name, m in _rows(results):
        for metric, d in m.items():
            lo, hi = d.get("ci95") or (None, None)
            tlo, thi = d.get("ci95_t") or (None, None)
            records.append({"model": name, "metric": metric, "mean": d.get("mean"), "sd": d.get("sd"),
                            "se": d.get("se"), "ci95_lo": lo, "ci95_hi": hi, "ci95_t_lo": tlo, "ci95_t_hi": thi,
                            "n": d.get("n"), "interval": d.get("interval"), "over": results.get("over"),
                            "note": d.get("note")})
    return pd.DataFrame.from_records(records)


def report_csv(results: dict) -> str:
    """`report_frame` as CSV text, its cells safe in a spreadsheet (runner.rundir.spreadsheet)."""
    return safe_frame(report_frame(results)).to_csv(index=False)


def write_reports(run_dir, results: dict, history: pd.DataFrame | None = None, clock=None, worker=None,
                  plots: bool = True, kept: dict[int, int] | None = None) -> list[Path]:
    """Write report.png, curves.png (with a history; both only with `plots`), report.md, report.csv and last
    results.json; each atomically.

    With a `clock` (runner.rundir.timing.Stopwatch), plots and reports are booked to it and results.json's
    `timing` is its reading just before results.json is written, so it covers every other file. A
    `worker` (plot_worker.PlotWorker, started before training and sent the curves after it) draws the plots
    in its own process; if it fails, they are drawn here. `kept`: each member's epoch whose weights it kept
    (member -> epoch), dotted on curves.png.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with status("writing plots"):
        jobs = [("report_plot", run_dir / "report.png", (results,))] if plots else []
        if plots and history is not None and len(history):
            jobs.append(("curves_plot", run_dir / "curves.png", (history, kept)))
        drawn = False
        if worker is not None and jobs:  # it was sent the curves when training ended; the report plot now
            worker.send(jobs[:1])
            drawn = worker.finish()
        if not drawn and jobs:
            for name, path, args in jobs:
                write_atomic(path, lambda file: getattr(drawing, name)(*args, file))
        written += [path for _, path, _ in jobs]
    if clock is not None:
        clock.lap("plots")
    for name, text in [("report.md", report_markdown(results)), ("report.csv", report_csv(results))]:
        write_atomic(run_dir / name, text)
        written.append(run_dir / name)
    if clock is not None:
        clock.lap("reports")
        results["timing"] = clock.timing()
    text = json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n"
    write_atomic(run_dir / "results.json", text)
    written.append(run_dir / "results.json")
    return written


def _jsonable(obj):
    """Plain JSON values: numpy scalars to Python, NaN/inf to null (results.json stays strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
