"""CSV files meant for spreadsheets: a label that is a formula is written as text (OWASP's leading quote), a
number stays a number, and runner reads its own files back to the labels as they were."""

import csv
import io
import re

import numpy as np
import pandas as pd
import pytest

import runner
from runner.commands.cli import main
from runner.evaluate.paired import read_units
from runner.rundir.spreadsheet import cell, safe_frame, unescape

CALC = "=cmd|' /C calc'!A0"
TRIGGER = re.compile(r"[=+\-@\t\r]")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def test_cells_that_start_a_formula_get_a_quote_and_numbers_do_not():
    assert [cell(v) for v in [CALC, "+x", "-x", "@SUM(A1)", "\tx", "\rx", "-1.5", "+3e-4", "ok", "'=q", -2.0]] == [
        "'" + CALC, "'+x", "'-x", "'@SUM(A1)", "'\tx", "'\rx", "-1.5", "+3e-4", "ok", "''=q", -2.0]
    for text in [CALC, "-x", "'=q", "''@a", "'plain", "-1.5", ""]:
        assert unescape(cell(text)) == text
    frame = pd.DataFrame({"label": [CALC, "-1"], "x": [-1.5, 2.0], "=h": ["a", "b"]})
    safe = safe_frame(frame)
    assert list(safe.columns) == ["label", "x", "'=h"] and safe["label"].tolist() == ["'" + CALC, "-1"]
    assert safe["x"].dtype == np.float64 and safe["x"].tolist() == [-1.5, 2.0]


@pytest.fixture(scope="module")
def formulas(tmp_path_factory):
    """A run on a CSV whose two classes are formulas (a negative feature too), and its data file."""
    folder = tmp_path_factory.mktemp("formulas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=60).round(3)
    data = folder / "data.csv"
    pd.DataFrame({"x": x, "z": rng.normal(size=60).round(3), "label": np.where(x > 0, CALC, "@SUM(1+1)")}).to_csv(
        data, index=False)
    run = folder / "run"
    assert main(["train", "dataset=csv", f"dataset.path={data}", "dataset.target=label", "trainer.epochs=3",
                 "trainer.progress=false", "plots=false", f"hydra.run.dir={run}"]) == 0
    return run, data


def _cells(path_or_text):
    text = path_or_text if isinstance(path_or_text, str) else path_or_text.read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))


def _formulas_left(table):
    return [c for line in table for c in line if TRIGGER.match(c) and not NUMBER.fullmatch(c)]


def test_predictions_csv_writes_formula_labels_as_text_and_reads_them_back(formulas):
    run, _ = formulas
    table = _cells(run / "predictions.csv")
    header, rows = table[0], table[1:]
    assert _formulas_left(table) == []  # no cell a spreadsheet would run
    labels = {r[header.index("y_true")] for r in rows} | {r[header.index("y_pred")] for r in rows}
    assert labels <= {"'" + CALC, "'@SUM(1+1)"} and "'" + CALC in labels
    assert f"p_{CALC}" in header  # a header cell starting with p_ is no formula: left as it is
    assert all(float(r[header.index(f"p_{CALC}")]) >= 0 for r in rows)  # probabilities stay numbers
    back = runner.load(run).predictions
    assert set(back["y_true"]) == {CALC, "@SUM(1+1)"}
    units, why = read_units(run, "binary")  # runner report's paired comparison reads the labels back
    assert units is not None, why


def test_runner_predict_out_and_stdout_write_formula_labels_as_text(formulas, tmp_path, capsys):
    run, data = formulas
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), "--data", str(data), "--out", str(out)]) == 0
    assert capsys.readouterr().out.endswith(f"and their mean: {out}\n")  # what it wrote, not the table
    assert main(["predict", str(run), "--data", str(data)]) == 0
    for table in (_cells(out), _cells(capsys.readouterr().out)):
        header = table[0]
        assert _formulas_left(table) == []
        assert {r[header.index("mean.pred")] for r in table[1:]} <= {"'" + CALC, "'@SUM(1+1)"}
        assert all(0 <= float(r[header.index(f"mean.p_{CALC}")]) <= 1 for r in table[1:])


def test_a_sweep_summary_writes_an_override_that_is_a_formula_as_text(tmp_path):
    from runner import rundir
    from runner.sweeps.sweep_report import summary_csv

    (tmp_path / "0").mkdir()
    rundir.write_status(tmp_path / "0", "running", job=[f"dataset.target={CALC}"])
    rundir.fail(tmp_path / "0", "@bad line", cause="user")
    text = summary_csv([], {"0": rundir.read_status(tmp_path / "0")}, tmp_path)
    table = _cells(text)
    row = dict(zip(table[0], table[1]))
    assert row["dataset.target"] == "'" + CALC and row["error"] == "'@bad line" and _formulas_left(table) == []
    (tmp_path / "summary.csv").write_text(text)
    back = runner.api.SweepResult(tmp_path, []).summary  # read back as it was
    assert back.loc[0, "dataset.target"] == CALC and back.loc[0, "error"] == "@bad line"
