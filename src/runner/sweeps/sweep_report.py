"""The end of a sweep (-m), under any launcher: the comparison table printed and saved in the sweep dir
(summary.md, summary.csv), every job's status read from its own directory, and the failed ones named."""

import csv
import io
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner import rundir
from runner.errors import RunnerError
from runner.rundir.folder import write_atomic
from runner.rundir.saved import own_overrides
from runner.rundir.spreadsheet import cell, unescape
from runner.sweeps.outcome import current


class SweepReport(Callback):
    """At the end of a multirun: one table comparing its jobs (as `runner report SWEEP_DIR` would), written to
    summary.md and summary.csv beside them, and the jobs that did not finish (in the command's Outcome)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """A problem with the table is one line on stderr; a failed job is a line in the Outcome's `failed`."""
        from runner.console import console
        from runner.evaluate.compare import compare_by_data
        from runner.evaluate.compare_views import to_markdown, to_table

        outcome = current()
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = job_statuses(sweep_dir)
        outcome.failed, outcome.crashed = unfinished(jobs)
        try:
            comparisons = compare_by_data([sweep_dir])
        except RunnerError as exc:
            comparisons = []
            print(f"sweep report: {exc}", file=sys.stderr)
        for comparison in comparisons:  # a sweep over datasets: one table each
            console.print(to_table(comparison, console.width))
        write_atomic(sweep_dir / "summary.md", "\n".join(to_markdown(c) for c in comparisons)
                     + _failed_md(outcome.failed))
        write_atomic(sweep_dir / "summary.csv", summary_csv(comparisons, jobs, sweep_dir))
        noticed = outcome.noticed
        if noticed:
            console.print(f"job{'s' * (len(noticed) > 1)} {', '.join(noticed)} logged notices or warnings: see "
                          f"{sweep_dir / noticed[0] / 'train.log'}" + (" and the others'" if len(noticed) > 1 else ""))
        ok = sum(r.get("status") == "ok" for r in jobs.values())
        console.print(f"{ok} of {len(jobs)} jobs finished; sweep directory: [bold]{sweep_dir.resolve()}[/] "
                      f"(summary.md, summary.csv; runner report {sweep_dir} to see it again)")


def job_statuses(sweep_dir: Path) -> dict[str, dict]:
    """Each job directory's status.json record by job name, in job order ("no status.json" for a job that
    never started writing)."""
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / rundir.STATUS).is_file())]
    dirs.sort(key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    return {p.name: rundir.read_status(p) or {"status": "failed", "error": "no status.json"} for p in dirs}


def summary_csv(comparisons, jobs: dict[str, dict], sweep_dir: Path) -> str:
    """runner report's CSV with a status column and every override as a column (also those one value in every
    ranked run), plus one row per job that has no results (its overrides, status and error), so a failed job
    is on record beside the others."""
    from runner.evaluate.compare_views import to_csv

    settings: list[str] = []
    rest: list[str] = []
    rows = []
    for c in comparisons:
        lines = [[unescape(v) for v in line] for line in csv.reader(io.StringIO(to_csv(c)))]  # escaped once, below
        for key in [*c.columns, *c.constant]:
            settings += [key] if key not in settings else []
        rest += [k for k in lines[0] if k not in ("rank", "mark", "run", *c.columns, *rest)]
        rows += [{**c.constant, **dict(zip(lines[0], line)), "status": "ok"} for line in lines[1:]]
    for name, record in jobs.items():
        if record.get("status") != "ok":
            overrides = _overrides(sweep_dir / name)
            settings += [k for k in overrides if k not in settings]
            rows.append({"run": name, "path": str((sweep_dir / name).resolve()), "status": record.get("status"),
                         "error": record.get("error", ""), **overrides})
    header = [cell(k) for k in ["status", "rank", "mark", "run", *settings, *rest, "error"]]
    out = io.StringIO()
    writer = csv.DictWriter(out, header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({cell(k): cell(v) for k, v in row.items()} for row in rows)  # spreadsheet-safe text
    return out.getvalue()


def _overrides(job_dir: Path) -> dict[str, str]:
    """A job's overrides: as status.json records them (a job stopped before Hydra wrote .hydra/ has only that)."""
    items = (rundir.read_status(job_dir) or {}).get("job")
    if not isinstance(items, list):
        try:
            items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            return {}
    return dict(item.split("=", 1) for item in items if isinstance(item, str) and "=" in item)


def unfinished(jobs: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Lines naming the jobs (job_statuses) that failed or never finished, and the names of those among them that
    were not a user error (status.json's cause "user", as a run of its own exits 2): a bug, a stop, a job that
    never finished."""
    failed = [f"job {name} {record.get('status')}" + (f": {record['error']}" if record.get("error") else "")
              for name, record in jobs.items() if record.get("status") != "ok"]
    crashed = [name for name, record in jobs.items() if record.get("status") != "ok"
               and (record.get("status"), record.get("cause")) != ("failed", "user")]
    return failed, crashed


def _failed_md(failed: list[str]) -> str:
    return "" if not failed else "\n**Jobs that did not finish**\n\n" + "\n".join(f"- {line}" for line in failed) + "\n"


def job_line(job_dir: Path, sweep_overrides: list[str], finished_before: bool = False, notices: int = 0) -> str:
    """The one line a sweep prints when a job is done: its status, its own overrides (not those every job
    has), its test headline on the metric it is ranked by, and its seconds."""
    import json

    from rich.markup import escape

    from runner.evaluate.stats import fmt_interval

    record = rundir.read_status(job_dir) or {"status": "failed", "error": "no status.json"}
    status = str(record.get("status", "?"))
    own = own_overrides([f"{k}={v}" for k, v in _overrides(job_dir).items()], sweep_overrides)
    from runner.console import short_override

    parts = [f"job {job_dir.name} " + ("[green]ok[/]" if status == "ok" else f"[red]{escape(status)}[/]"),
             escape(" ".join(map(short_override, own)))]
    try:
        results = json.loads((job_dir / rundir.RESULTS).read_text(encoding="utf-8")) if status == "ok" else {}
    except (OSError, ValueError):
        results = {}
    if results:
        metric = results.get("selection", {}).get("metric", "")
        test = results.get("metrics", {}).get(f"test/{metric}", {})
        if test.get("mean") is not None:
            parts.append(f"test {metric} {fmt_interval(test, compact=True)}")  # as the summary table has it
        seconds = results.get("timing", {}).get("total_s")
        parts.append("finished before" if finished_before else f"{seconds:.1f} s" if seconds is not None else "")
    elif record.get("error"):
        parts.append(escape(str(record["error"])))
    if notices:
        parts.append(f"{notices} notice{'s' * (notices > 1)}")
    return " · ".join(p for p in parts if p)
