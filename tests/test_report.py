"""Reports: best values in bold, the rich table, CSV, and results.json written atomically."""

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from runner.evaluate import report
from runner.evaluate.report import report_csv, report_markdown, results_table, write_reports
from runner.evaluate.stats import mean_ci


def ci(*values):
    return mean_ci(values)


RESULTS = {
    "task": "binary", "dataset": "heart", "model": "mlp", "members": 3, "over": "3 folds",
    "metrics": {"test/accuracy": ci(0.80, 0.84, 0.82), "test/log_loss": ci(0.45, 0.41, 0.43),
                "test/mean_error": ci(0.3, 0.2, 0.25)},
    "baselines": {
        "majority": {"test/accuracy": ci(0.54, 0.55, 0.53), "test/log_loss": ci(0.69, 0.69, 0.70),
                     "test/mean_error": ci(-0.1, 0.0, 0.05)},
        "logreg": {"test/accuracy": ci(0.85, 0.86, 0.84), "test/log_loss": ci(0.40, 0.38, 0.39),
                   "test/mean_error": ci(0.4, 0.3, 0.35)},
    },
    "timing": {"train_s": 1.5, "total_s": 2.0},
}


def _row(md: str, name: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_bolds_best_per_column():
    md = report_markdown(RESULTS)
    assert "95% CI over 3 folds (n = 3)" in md
    mlp, majority, logreg = _row(md, "mlp"), _row(md, "majority"), _row(md, "logreg")
    assert logreg[1] == "**0.850 ± 0.011**"  # accuracy: the max
    assert logreg[2] == "**0.390 ± 0.011**"  # log_loss: the min
    assert majority[3].startswith("**-0.017")  # mean_error: nearest zero
    assert not any(c.startswith("**") for c in mlp + majority[1:3] + logreg[3:])


def test_rich_table_says_what_plus_minus_is_over():
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(results_table(RESULTS))
    text = console.export_text()
    assert "95% CI over 3 folds (n = 3)" in text
    for cell in ("accuracy ↑", "log_loss ↓", "majority", "logreg", "0.820 ± 0.023", "[0.797, 0.843]"):
        assert cell in text
    assert "t interval (ci95_t) is 2.20× wider" in " ".join(text.split())  # n = 3: t_{0.975, 2} / 1.96 = 4.303 / 1.96


def test_rich_table_fits_80_columns_and_explains_asymmetric_and_zero_width_intervals():
    results = json.loads(json.dumps(RESULTS))
    results["over"] = "5 folds x 2 repeats, Nadeau–Bengio corrected"
    results["metrics"]["test/balanced_accuracy"] = dict(ci(0.7, 0.8, 0.9), interval="bootstrap percentile (…)")
    acc = results["metrics"]["test/accuracy"]
    acc.update(ci95=[0.70, 0.95], interval="Nadeau–Bengio; Wilson, effective n = 40")
    results["baselines"]["majority"]["test/log_loss"].update(se=0.0, ci95=[0.69, 0.69], note="zero spread: all 3 "
                                                              "folds scored 0.69")
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(results_table(results))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text.split("\nbold")[0]
    [accuracy] = [line.split("│") for line in text.splitlines() if "accuracy ↑" in line and "balanced" not in line]
    assert [c.strip() for c in accuracy[3:5]] == ["0.820", "[0.700, 0.950]"]  # asymmetric: the interval once
    assert "Nadeau–Bengio: SE² = (1/J + n_test/n_train)·sd²" in text and "Wilson score interval" in text
    assert "majority log_loss: zero spread: all 3 folds scored 0.69." in " ".join(text.split())
    assert "balanced_accuracy† ↑" in text


def test_csv_has_one_row_per_model_and_metric():
    frame = pd.read_csv(io.StringIO(report_csv(RESULTS)))
    assert len(frame) == 9 and list(frame.model.unique()) == ["mlp", "majority", "logreg"]
    row = frame[(frame.model == "logreg") & (frame.metric == "test/accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(0.85) and row["n"] == 3 and row["ci95_hi"] > row["ci95_lo"]


def test_write_reports_round_trips_json_and_writes_every_file(tmp_path):
    results = json.loads(json.dumps(RESULTS))
    results["metrics"]["test/roc_auc"] = {"mean": float("nan"), "n": 0}  # undefined: must be null, not NaN
    history = pd.DataFrame([{"member": m, "epoch": e, "train/loss": 1 / (e + 1), "val/loss": 1.2 / (e + 1) + m / 10,
                             "val/accuracy": 0.5 + e / 20, "lr": 0.01} for m in range(3) for e in range(8 - m)])
    written = write_reports(tmp_path, results, history)
    assert sorted(p.name for p in written) == ["curves.png", "report.csv", "report.md", "report.png", "results.json"]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in written)  # no temporary files left
    back = json.loads((tmp_path / "results.json").read_text(), parse_constant=pytest.fail)
    assert back["metrics"]["test/roc_auc"]["mean"] is None
    assert back["metrics"]["test/accuracy"] == RESULTS["metrics"]["test/accuracy"]  # floats round-trip exactly
    assert back["baselines"] == RESULTS["baselines"] and back["timing"] == RESULTS["timing"]
    assert "n/a" in (tmp_path / "report.md").read_text()  # the undefined AUC
    for png in ("report.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = tmp_path / "no_plots"
    assert sorted(p.name for p in write_reports(bare, results, history, plots=False)) == [
        "report.csv", "report.md", "results.json"]
    assert sorted(os.listdir(bare)) == ["report.csv", "report.md", "results.json"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    from runner.rundir import folder

    target = tmp_path / "results.json"
    target.write_text('{"old": true}')

    def half_then_crash(file):
        file.write(b'{"new": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        folder.write_atomic(target, half_then_crash)
    assert json.loads(target.read_text()) == {"old": True} and os.listdir(tmp_path) == ["results.json"]
    # write_reports goes through os.replace from a temporary file in the same directory (rundir.write_atomic)
    replaced = []
    real = os.replace
    monkeypatch.setattr(folder.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real(a, b)))
    write_reports(tmp_path, RESULTS, None)
    src, dst = next((a, b) for a, b in replaced if b.name == "results.json")
    assert src.parent == dst.parent and src.name != "results.json"
    assert not math.isnan(json.loads(target.read_text())["metrics"]["test/accuracy"]["mean"])


def test_epoch_band_is_mean_ci_of_each_epoch():
    from runner.evaluate.plots import _epoch_band
    from runner.evaluate.stats import Z95, mean_ci

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"member": np.repeat([0, 1, 2], 4), "epoch": np.tile(np.arange(4), 3),
                          "val/loss": rng.uniform(size=12)})
    frame.loc[(frame.member > 0) & (frame.epoch == 3), "val/loss"] = np.nan  # two members stopped early
    epochs, mean, half, count = _epoch_band(frame, "val/loss")
    assert epochs.tolist() == [0, 1, 2, 3] and count.tolist() == [3, 3, 3, 1]
    for e in range(4):
        d = mean_ci(frame.loc[frame.epoch == e, "val/loss"])
        assert mean[e] == pytest.approx(d["mean"])
        assert half[e] == pytest.approx(0.0 if d["se"] is None else Z95 * d["se"])


def test_a_kfold_regression_report_says_how_its_mse_and_rmse_intervals_are_made():
    from runner.evaluate.headline import summarize

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"member": np.repeat(np.arange(5), 8), "fold": np.repeat(np.arange(5), 8), "repeat": 0,
                          "seed": 0, "row": np.arange(40), "y_true": 0.0, "y_pred": rng.normal(size=40)})
    results = {"task": "regression", "dataset": "d", "model": "mlp", "members": 5, **summarize(table, "regression")}
    md = report_markdown(results)
    assert "MSE, MAE, log loss and 1 − R² over folds: mean/(1 ± t·SE/(2·mean))²" in md
    assert "RMSE: the root of the folds' mean MSE" in md
    rmse = results["metrics"]["test/rmse"]
    assert rmse["mean"] ** 2 == pytest.approx(results["metrics"]["test/mse"]["mean"])
    lo, hi = rmse["ci95"]  # asymmetric: printed as its ends
    assert _row(md, "mlp")[2] == f"**{rmse['mean']:.3f} [{lo:.3f}, {hi:.3f}]**"


def test_a_model_with_zero_spread_on_several_metrics_gets_one_footnote():
    results = json.loads(json.dumps(RESULTS))
    for metric, value in (("test/log_loss", 0.69), ("test/accuracy", 0.5)):
        results["baselines"]["majority"][metric].update(se=0.0, ci95=[value, value],
                                                        note=f"zero spread: all 3 folds scored {value:g}")
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(results_table(results))
    text = " ".join(console.export_text().split())
    assert "majority: zero spread, all 3 folds scored the same:" in text
    assert "log_loss 0.69" in text and "accuracy 0.5" in text and "majority log_loss: zero spread" not in text


def test_a_clipped_interval_is_named_in_its_footnote():
    results = json.loads(json.dumps(RESULTS))
    results["baselines"]["logreg"]["test/log_loss"].update(ci95=[0.0, 0.143], interval="mean ± 4.3·SE, clipped to "
                                                           "[0, inf]")
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(results_table(results))
    text = " ".join(console.export_text().split())
    assert "Intervals cut at the metric's range: logreg log_loss." in text
    assert "Intervals cut at the metric's range: logreg log_loss." in report_markdown(results)


def test_curves_mark_the_epoch_each_member_kept(monkeypatch):
    from matplotlib.collections import PathCollection

    from runner.evaluate import plots

    history = pd.DataFrame({"member": np.repeat([0, 1], 4), "epoch": np.tile(np.arange(4), 2),
                            "train/loss": np.linspace(1, 0.5, 8), "val/loss": [0.9, 0.7, 0.8, 0.85, 1.0, 0.95, 0.9, 0.6],
                            "val/accuracy": np.linspace(0.5, 0.9, 8), "lr": 0.01})
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    plots.curves_plot(history, {0: 1, 1: 3}, io.BytesIO())
    loss, metric = drawn[0].axes
    dots = [c.get_offsets().tolist() for c in loss.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert dots == [[[1, 0.7], [3, 0.6]]]  # on the validation loss, at each member's kept epoch
    dots = [c.get_offsets().tolist() for c in metric.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert dots == [[[1, pytest.approx(0.5 + 0.4 / 7)], [3, pytest.approx(0.9)]]]
    assert "dot: the epoch kept" in [t.get_text() for t in loss.get_legend().get_texts()]
