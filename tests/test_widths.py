"""What runner prints fits the terminal (80 and 120 columns) and never cuts a number short."""

import io
import json
import re

import pytest
from rich.console import Console

from runner.commands.cli import main
from runner.console import console
from runner.evaluate.averaging_table import averaging_table
from runner.evaluate.compare import compare_by_data
from runner.evaluate.compare_views import to_table
from runner.evaluate.report import results_table
from runner.evaluate.stats import fmt_range
from runner.ensemble.results import ensemble_table

FAST = ["trainer.epochs=12", "trainer.progress=false", "plots=false"]
RUNS = {  # the runs whose terminal output the issue lists, small
    "single": [],
    "kfold": ["eval=kfold", "eval.k=3", "trainer.seeds=2"],
    "avg": ["avg=compare"],
    "ensemble": ["ensemble=compare", "trainer.seeds=3"],
    "logreg": ["model=logreg", "optim=sgd", "optim.lr=0.1"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each run trained once at 80 columns: {name: (run dir, what it printed)}, and a 2 x 2 sweep."""
    root = tmp_path_factory.mktemp("widths")
    out = {}
    with _width(80):
        for name, args in RUNS.items():
            printed = _captured(lambda: main(["train", *FAST, *args, f"hydra.run.dir={root / name}"]))
            out[name] = (root / name, printed)
        printed = _captured(lambda: main(["train", "-m", *FAST, "optim=sgd,adam", "optim.lr=0.01,0.001",
                                          f"hydra.sweep.dir={root / 'sweep'}"]))
        out["sweep"] = (root / "sweep", printed)
    return out


class _width:
    """The runner console at `columns` for a while (rich reads COLUMNS once, when the console is made)."""

    def __init__(self, columns):
        self.columns = columns

    def __enter__(self):
        self.before = console._width
        console.width = self.columns

    def __exit__(self, *exc):
        console._width = self.before


def _captured(command) -> str:
    before = console.file
    console.file = text = io.StringIO()
    try:
        assert command() == 0
    finally:
        console.file = before
    return text.getvalue()


def _rendered(renderable, columns: int) -> str:
    text = io.StringIO()
    Console(file=text, width=columns, color_system=None).print(renderable)
    return text.getvalue()


def _fits(text: str, columns: int) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns, max(lines, key=len)
    assert "…" not in text


def _headline_unclipped(results: dict, text: str) -> None:
    """Every headline metric's mean and interval are on the table's row for it, whole."""
    for metric, d in results["metrics"].items():
        name = metric.split("/", 1)[-1]
        row = next(line for line in text.splitlines() if re.search(rf"\b{name}\W", line))
        assert f"{d['mean']:.3f}" in row and fmt_range(d["ci95"]) in row and f" {d['n']} " in row + " ", row


@pytest.mark.slow  # trains five runs and a sweep: about 40 s
@pytest.mark.parametrize("columns", [80, 120])
def test_every_table_fits_and_keeps_its_numbers(runs, columns):
    for name in RUNS:
        run_dir, printed = runs[name]
        results = json.loads((run_dir / "results.json").read_text())
        if columns == 80:  # what the run printed, as it printed it
            _fits(printed, 80)
            _headline_unclipped(results, printed)
        table = _rendered(results_table(results), columns)
        _fits(table, columns)
        _headline_unclipped(results, table)
        if name == "avg":
            _fits(_rendered(averaging_table(results), columns), columns)
        if name == "ensemble":
            _fits(_rendered(ensemble_table(results), columns), columns)
    sweep_dir, printed = runs["sweep"]
    if columns == 80:
        _fits(printed, 80)
    for comparison in compare_by_data([sweep_dir]):
        _fits(_rendered(to_table(comparison, columns), columns), columns)
    mixed = compare_by_data([runs[name][0] for name in RUNS])  # different settings in every run
    for comparison in mixed:
        shown = _rendered(to_table(comparison, columns), columns)
        _fits(shown, columns)
        for row in comparison.rows:
            assert re.search(rf"^\s*(\S\s+)?{row['run']}\s", shown, re.M), row["run"]  # each run's id is on its row


def test_runner_report_over_mixed_runs_fits_80_columns_with_every_run_id(tmp_path, capsys):
    for name in ("a", "b"):
        extra = ["model=logreg", "optim=sgd", "optim.lr=0.1", "trainer.seeds=2"] if name == "b" else []
        assert main(["train", "trainer.epochs=3", "trainer.progress=false", "plots=false", *extra,
                     f"hydra.run.dir={tmp_path / name}"]) == 0
    capsys.readouterr()
    with _width(80):
        assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    shown = capsys.readouterr().out
    _fits(shown, 80)
    table = shown.split("\n\n")[0]
    for name in ("a", "b"):
        assert re.search(rf"^\s*(\S\s+)?{name}\s", table, re.M)
    for name in ("a", "b"):
        acc = json.loads((tmp_path / name / "results.json").read_text())["validation"]["val/accuracy"]
        assert f"{acc['mean']:.3f}" in table  # the ranking column, whole
