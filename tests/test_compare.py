"""`runner report` and the end-of-sweep table: a real 3-job sweep, and hand-made runs with known intervals."""

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from runner.commands.cli import main
from runner.evaluate.compare import compare
from runner.evaluate.compare_views import caption_lines, to_csv, to_json, to_markdown
from runner.evaluate.stats import Z95


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real `runner train -m optim=sgd,adam,adamw` (3 epochs, in-process): (sweep dir, what it printed)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "multirun"
    argv = sys.argv[:]  # train_command sets sys.argv for Hydra
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = main(["train", "-m", "optim=sgd,adam,adamw", "trainer.epochs=3", "trainer.progress=false",
                           "trainer.device=cpu", f"hydra.sweep.dir={sweep_dir}"])
    finally:
        sys.argv = argv
    assert status == 0
    return sweep_dir, out.getvalue()


def _results(path) -> dict:
    return json.loads((Path(path) / "results.json").read_text())


def test_sweep_rows_vary_only_optim_and_carry_each_jobs_numbers(sweep):
    sweep_dir, _ = sweep
    c = compare([sweep_dir])
    assert len(c.rows) == 3
    assert c.columns == ["optim"]
    assert sorted(r["overrides"]["optim"] for r in c.rows) == ["adam", "adamw", "sgd"]
    assert c.constant == {"trainer.epochs": "3", "trainer.progress": "false", "trainer.device": "cpu"}
    assert c.metric == "test/accuracy"
    for row in c.rows:
        job = _results(row["path"])
        assert (Path(row["path"]) / ".hydra" / "overrides.yaml").read_text().count(f"optim={row['overrides']['optim']}")
        for metric, d in job["metrics"].items():
            assert row["metrics"][metric]["mean"] == d["mean"]
        # The order reads validation when the runs report it, else test (said in the caption).
        assert c.by_validation == ("val/accuracy" in job.get("validation", {}))
        expected = job["validation"]["val/accuracy"] if c.by_validation else job["metrics"]["test/accuracy"]
        assert row["selection"]["mean"] == expected["mean"]
        assert row["n"] == job["metrics"]["test/accuracy"]["n"] == 61
        assert row["over"] == job["over"]
        # A sweep's jobs draw no plots unless plots=true; the summary and TensorBoard compare them.
        assert not list(Path(row["path"]).glob("*.png")) and (Path(row["path"]) / "report.md").is_file()


def _correct_per_row(path):
    """Each test row's correctness averaged over the run's seeds, from its predictions.csv (by hand)."""
    import pandas as pd

    p = pd.read_csv(Path(path) / "predictions.csv")
    p = p[p["split"] == "test"]
    return (p["y_true"] == p["y_pred"]).astype(float).groupby(p["row"]).mean()


def test_sweep_is_sorted_best_first_and_paired_with_the_best_on_test_rows(sweep):
    from scipy import stats

    sweep_dir, _ = sweep
    rows = compare([sweep_dir]).rows
    means = [r["selection"]["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    assert rows[0]["mark"] == "best" and rows[0]["vs_best"] is None
    best = _correct_per_row(rows[0]["path"])
    raw = []
    for row in rows[1:]:
        own = _correct_per_row(row["path"])
        assert list(own.index) == list(best.index) and len(own) == 61  # the same 61 test rows, paired
        d = own - best
        assert row["vs_best"]["mean"] == pytest.approx(d.mean(), abs=1e-12)
        assert row["vs_best"]["mean"] == pytest.approx(row["metrics"]["test/accuracy"]["mean"]
                                                       - rows[0]["metrics"]["test/accuracy"]["mean"])
        half = stats.t.ppf(0.975, 60) * d.std(ddof=1) / np.sqrt(61)
        assert row["vs_best"]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-9)
        p = stats.ttest_rel(own, best).pvalue if d.std() > 0 else 1.0
        assert row["vs_best"]["p_unadjusted"] == pytest.approx(p, abs=1e-9)
        raw.append(p)
    # Holm over the two runs compared: the smaller p doubled, the larger kept (never below the first).
    first, second = sorted(raw)
    holm = {first: min(1, 2 * first), second: max(min(1, 2 * first), second)}
    for row, p in zip(rows[1:], raw):
        assert row["vs_best"]["p"] == pytest.approx(holm[p], abs=1e-9)
        assert row["mark"] == ("same" if holm[p] >= 0.05 else "worse" if row["vs_best"]["mean"] < 0 else "better")


def test_sweep_prints_the_comparison_table_at_the_end(sweep):
    sweep_dir, printed = sweep
    tail = printed[printed.rindex("\njob 2 "):]  # after the last job's line
    by_validation = compare([sweep_dir]).by_validation
    assert f"3 runs compared by {'validation' if by_validation else 'test'} accuracy" in tail
    assert "optim" in tail and "sgd" in tail and "adamw" in tail and "★" in tail and "Δ test" in tail
    assert ("No validation score was available" in tail) != by_validation
    assert f"sweep directory: {sweep_dir}" in tail.replace("\n", "")


def test_report_command_formats_parse(sweep, capsys):
    sweep_dir, _ = sweep
    assert main(["report", str(sweep_dir), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in records] == [1, 2, 3] and records[0]["mark"] == "best"
    for r in records:
        assert r["metrics"]["test/accuracy"]["mean"] == _results(r["path"])["metrics"]["test/accuracy"]["mean"]
    c = compare([sweep_dir])
    for r, row in zip(records[1:], c.rows[1:]):
        assert r["mark"] == row["mark"] and r["vs_best"]["mean"] == row["vs_best"]["mean"]
        assert r["vs_best"]["over"] == "61 test rows" and r["vs_best"]["p_adjustment"] == "Holm"

    assert main(["report", str(sweep_dir), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["optim"] for r in rows] == [r["overrides"]["optim"] for r in records]
    for row in rows:
        d = _results(row["path"])["metrics"]["test/accuracy"]
        assert float(row["test/accuracy"]) == d["mean"]
        assert float(row["test/accuracy_ci95_lo"]) == pytest.approx(d["ci95"][0])
    for row, ours in zip(rows, c.rows):
        if ours["vs_best"] is None:
            assert row["mark"] == "best" and row["vs_best"] == row["vs_best_p"] == ""
            continue
        assert float(row["vs_best"]) == ours["vs_best"]["mean"] and float(row["vs_best_p"]) == ours["vs_best"]["p"]
        assert [float(row["vs_best_lo"]), float(row["vs_best_hi"])] == ours["vs_best"]["ci95"]

    assert main(["report", str(sweep_dir), "--format", "md"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3
    assert table[0].startswith("| vs best | run | optim | ")
    assert "| accuracy ↑ | balanced_accuracy ↑ |" in table[0] and table[0].endswith("| n | over |")
    # Bold: only the score the best run is ranked by (its validation accuracy), as the terminal's table has it.
    header, best = table[0].split(" | "), table[2].split(" | ")
    [bold] = [header[i] for i, cell in enumerate(best) if cell.startswith("**") and cell.endswith("**")]
    assert bold == ("val accuracy ↑" if compare([sweep_dir]).by_validation else "accuracy ↑") and "**" not in table[3]

    assert main(["report", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 runs compared by" in out and "★" in out
    flat = " ".join(out.split())
    assert "Δ test" in flat and "Holm" in flat and "over the 2 runs compared." in flat
    assert {r["mark"] for r in c.rows[1:]} <= {"same", "worse", "better"}


# ---------------------------------------------------------------- hand-made runs with known intervals


def _run(root: Path, name: str, mean: float, half: float, overrides=(), metric="test/accuracy", n=10,
         validation=None, config=None) -> Path:
    """A run dir whose `metric` is mean ± half (half = 1.96·se), with the given overrides."""
    path = root / name
    (path / ".hydra").mkdir(parents=True)
    se = half / Z95
    results = {"task": "binary", "over": f"{n} seeds",
               "metrics": {metric: {"mean": mean, "se": se, "ci95": [mean - half, mean + half], "n": n}}}
    if validation is not None:
        v_mean, v_half = validation
        results["validation"] = {"val/accuracy": {"mean": v_mean, "se": v_half / Z95,
                                                  "ci95": [v_mean - v_half, v_mean + v_half], "n": n}}
    (path / "results.json").write_text(json.dumps(results))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {"optim": {"name": "adam", "lr": 0.001}}))
    return path


def _predictions(path: Path, members) -> Path:
    """A binary run's predictions.csv: `members` holds (fold, repeat, seed, test rows, rows it gets wrong)."""
    lines = ["member,fold,repeat,seed,split,row,y_true,y_pred,p_0,p_1"]
    for m, (fold, repeat, seed, rows, wrong) in enumerate(members):
        lines.append(f"{m},{fold},{repeat},{seed},val,999,1,1,0.3,0.7")  # validation rows are not compared
        for row in rows:
            y = row % 2
            pred = 1 - y if row in wrong else y
            lines.append(f"{m},{fold},{repeat},{seed},test,{row},{y},{pred},{0.8 - 0.6 * pred:.1f},{0.2 + 0.6 * pred:.1f}")
    (path / "predictions.csv").write_text("\n".join(lines) + "\n")
    return path


def _holdout(path: Path, wrong, rows=range(60)) -> Path:
    """One seed on one split of 60 test rows, wrong on `wrong`."""
    return _predictions(path, [(0, 0, 0, list(rows), set(wrong))])


def _correct(rows, wrong) -> np.ndarray:
    return np.array([0.0 if r in wrong else 1.0 for r in rows])


def test_holdout_runs_are_paired_over_test_rows_with_holm_adjusted_p(tmp_path):
    from scipy import stats

    wrong = {"b": set(range(0, 60, 5)), "a": set(range(0, 60, 5)) | {1, 2}, "c": set(range(0, 60, 5)) | set(range(1, 60, 3))}
    for name, (overrides, val) in {"a": ("optim=sgd", 0.79), "b": ("optim=adam", 0.80), "c": ("optim=adamw", 0.70)}.items():
        acc = 1 - len(wrong[name]) / 60
        _holdout(_run(tmp_path, name, acc, 0.1, [overrides], validation=(val, 0.05)), wrong[name])
    c = compare([tmp_path])
    assert [(r["run"], r["mark"]) for r in c.rows] == [("b", "best"), ("a", "same"), ("c", "worse")]
    best = _correct(range(60), wrong["b"])
    raw = {}
    for row in c.rows[1:]:
        d = _correct(range(60), wrong[row["run"]]) - best
        assert row["vs_best"]["mean"] == pytest.approx(d.mean())  # a: -2/60; c: -(rows 1, 4, ... not already wrong)/60
        half = stats.t.ppf(0.975, 59) * d.std(ddof=1) / np.sqrt(60)
        assert row["vs_best"]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
        raw[row["run"]] = stats.ttest_rel(_correct(range(60), wrong[row["run"]]), best).pvalue
        assert row["vs_best"]["p_unadjusted"] == pytest.approx(raw[row["run"]])
        assert row["vs_best"]["over"] == "60 test rows"
    assert c.rows[1]["vs_best"]["mean"] == pytest.approx(-2 / 60)
    # Holm by hand: c's p is the smaller, doubled; a's is then max(2·p_c, p_a).
    assert raw["c"] < raw["a"]
    assert c.rows[2]["vs_best"]["p"] == pytest.approx(2 * raw["c"])
    assert c.rows[1]["vs_best"]["p"] == pytest.approx(max(2 * raw["c"], raw["a"]))
    assert c.rows[1]["vs_best"]["p"] > 0.05 > c.rows[2]["vs_best"]["p"]
    md = to_markdown(c)
    assert "| ≈ same | a | sgd |" in md and "| -0.033 ± 0.0" in md and "paired over the units they share (60 test rows)" in md
    records = json.loads(to_json(c))
    assert records[2]["vs_best"]["p"] == pytest.approx(2 * raw["c"]) and records[2]["mark"] == "worse"


def test_kfold_runs_are_paired_over_folds_with_seeds_averaged_per_fold(tmp_path):
    from scipy import stats

    folds = [list(range(f, 60, 3)) for f in range(3)]  # 3 folds of 20 rows
    wrong = {"a": [set(range(0, 60, 4)), set(range(0, 60, 5))],  # per seed: the rows it gets wrong
             "b": [set(range(0, 60, 4)) | {0, 1, 2, 5}, set(range(0, 60, 6))]}
    accuracy = {}
    for name in ("a", "b"):
        members = [(f, 0, s, folds[f], wrong[name][s]) for f in range(3) for s in range(2)]
        # per fold: each seed's accuracy on the fold's 20 rows, averaged over the 2 seeds
        accuracy[name] = np.array([np.mean([_correct(folds[f], wrong[name][s]).mean() for s in range(2)])
                                   for f in range(3)])
        _predictions(_run(tmp_path, name, accuracy[name].mean(), 0.05, [f"optim={name}"],
                          validation=(0.9 if name == "a" else 0.8, 0.05)), members)
    c = compare([tmp_path])
    d = accuracy["b"] - accuracy["a"]
    vs = c.rows[1]["vs_best"]
    assert c.rows[1]["run"] == "b" and vs["over"] == "3 folds" and vs["n"] == 3
    assert vs["mean"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert vs["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert vs["p"] == pytest.approx(stats.ttest_rel(accuracy["b"], accuracy["a"]).pvalue)  # one run: Holm = raw

    # Repeated k-fold: 2 repeats x 3 folds, Nadeau–Bengio's (1/n + n_test/n_train) factor on the variance.
    for name in ("a", "b"):
        (tmp_path / name / "predictions.csv").unlink()
    second = [list(range(20 * f, 20 * f + 20)) for f in range(3)]  # the second repeat's folds: other rows
    split = {(0, f): folds[f] for f in range(3)} | {(1, f): second[f] for f in range(3)}
    per_fold = {}
    for name in ("a", "b"):
        members = [(f, r, 0, split[r, f], wrong[name][0] if r == 0 else wrong[name][1]) for r in range(2) for f in range(3)]
        per_fold[name] = np.array([_correct(rows, w).mean() for *_, rows, w in members])
        _predictions(tmp_path / name, members)
    c = compare([tmp_path])
    vs = c.rows[1]["vs_best"]
    d = per_fold["b"] - per_fold["a"]
    se = np.sqrt((1 / 6 + 20 / 40) * d.var(ddof=1))
    assert vs["over"] == "3 folds x 2 repeats, Nadeau–Bengio corrected"
    assert vs["mean"] == pytest.approx(d.mean()) and vs["se"] == pytest.approx(se)
    assert vs["p"] == pytest.approx(2 * stats.t.sf(abs(d.mean()) / se, 5))
    assert vs["ci95"] == pytest.approx([d.mean() - stats.t.ppf(0.975, 5) * se, d.mean() + stats.t.ppf(0.975, 5) * se])


def test_runs_on_other_test_rows_splits_or_plans_are_never_paired(tmp_path):
    from runner.evaluate.compare import compare_by_data

    holdout = {"name": "holdout", "test_fraction": 0.2, "split_seed": 0}
    runs = {"a": (holdout, 0.9), "b": (holdout, 0.8), "c": ({**holdout, "split_seed": 1}, 0.85)}
    for name, (ev, val) in runs.items():
        path = _run(tmp_path / "seeds", name, 0.8, 0.05, [f"eval.split_seed={ev['split_seed']}", f"optim={name}"],
                    validation=(val, 0.05), config={"eval": ev})
        _holdout(path, {1, 2, 3} if name == "b" else {1})
    tables = compare_by_data([tmp_path / "seeds"])
    assert [[r["run"] for r in t.rows] for t in tables] == [["a", "b"], ["c"]]
    assert tables[0].rows[1]["vs_best"]["mean"] == pytest.approx(-2 / 60) and tables[1].rows[0]["vs_best"] is None

    # Recorded as the same plan but tested on other rows, or scored over folds: listed apart, with the reason.
    root = tmp_path / "rows"
    _holdout(_run(root, "a", 0.8, 0.05, ["optim=a"], validation=(0.9, 0.05)), {1})
    _holdout(_run(root, "b", 0.8, 0.05, ["optim=b"], validation=(0.85, 0.05)), {1}, rows=range(1, 61))
    _predictions(_run(root, "c", 0.8, 0.05, ["optim=c"], validation=(0.84, 0.05)),
                 [(f, 0, 0, list(range(f, 60, 3)), {1}) for f in range(3)])
    _run(root, "d", 0.8, 0.05, ["optim=d"], validation=(0.86, 0.05))  # no predictions.csv
    _holdout(_run(root, "e", 0.8, 0.05, ["optim=e"], validation=(0.7, 0.05)), {1, 2})
    c = compare([root])
    assert [(r["run"], r["mark"]) for r in c.rows] == [("a", "best"), ("e", "same"), ("d", "not paired"),
                                                        ("b", "not paired"), ("c", "not paired")]
    reasons = {r["run"]: r["not_paired"] for r in c.rows}
    assert reasons["b"] == "tested other rows than the best (60 vs 60, 59 shared)"
    assert reasons["c"] == "scored over 3 folds, the best over 60 test rows"
    assert reasons["d"] == "no predictions.csv"
    assert all(r["vs_best"] is None for r in c.rows if r["mark"] == "not paired")
    assert c.rows[1]["vs_best"]["p"] == c.rows[1]["vs_best"]["p_unadjusted"]  # Holm over the one run paired
    lines = list(csv.DictReader(io.StringIO(to_csv(c))))
    assert [(x["mark"], x["vs_best"], x["vs_best_note"]) for x in lines[2:]] == [
        ("not paired", "", reasons[r]) for r in ("d", "b", "c")]
    assert "b: tested other rows than the best" in to_markdown(c)


def test_lower_is_better_metric_sorts_ascending(tmp_path):
    _run(tmp_path, "x", 0.30, 0.01, ["optim=sgd"], metric="test/rmse")
    _run(tmp_path, "y", 0.20, 0.01, ["optim=adam"], metric="test/rmse")
    _run(tmp_path, "z", 0.205, 0.01, ["optim=adamw"], metric="test/rmse")
    rows = compare([tmp_path], metric="rmse").rows
    # Without predictions.csv there are no test units to pair: listed, in order, not marked against the best.
    assert [(r["run"], r["mark"]) for r in rows] == [("y", "best"), ("z", "not paired"), ("x", "not paired")]
    assert rows[1]["not_paired"] == "the best run: no predictions.csv"


def test_regression_rmse_is_paired_over_rows_by_the_delta_method(tmp_path):
    from scipy import stats

    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    preds = {"a": y + rng.normal(scale=0.5, size=40), "b": y + rng.normal(scale=0.8, size=40)}
    for name, val in (("a", 0.4), ("b", 0.6)):
        path = _run(tmp_path, name, 0.5, 0.05, [f"optim={name}"], metric="test/rmse")
        results = _results(path)
        results["task"] = "regression"
        results["validation"] = {"val/rmse": {"mean": val, "se": 0.01, "ci95": [val - 0.02, val + 0.02], "n": 40}}
        (path / "results.json").write_text(json.dumps(results))
        lines = ["member,fold,repeat,seed,split,row,y_true,y_pred"]
        lines += [f"0,0,0,0,test,{i},{float(y[i])!r},{float(preds[name][i])!r}" for i in range(40)]
        (path / "predictions.csv").write_text("\n".join(lines) + "\n")
    c = compare([tmp_path], metric="rmse")
    vs = c.rows[1]["vs_best"]
    za, zb = (preds["a"] - y) ** 2, (preds["b"] - y) ** 2
    ra, rb = np.sqrt(za.mean()), np.sqrt(zb.mean())
    u = zb / (2 * rb) - za / (2 * ra)  # each row's first-order share of rmse_b - rmse_a
    assert vs["mean"] == pytest.approx(rb - ra)
    assert vs["se"] == pytest.approx(u.std(ddof=1) / np.sqrt(40))
    # The t statistic is the estimate over its SE; u's mean is (rb - ra)/2, half of it (the bug this replaced).
    assert vs["p"] == pytest.approx(2 * stats.t.sf(abs(rb - ra) / vs["se"], 39))
    assert c.rows[1]["mark"] == ("worse" if vs["p"] < 0.05 else "same")


def test_kfold_rmse_is_paired_over_folds_as_the_root_of_the_mean_fold_mse(tmp_path):
    import pandas as pd
    from scipy import stats

    from runner.evaluate.headline import summarize_table

    rng = np.random.default_rng(1)
    y = rng.normal(size=30)
    folds = [list(range(f, 30, 3)) for f in range(3)]
    fold_mse, headline = {}, {}
    for name, scale in (("a", 0.5), ("b", 0.9)):
        path = _run(tmp_path, name, 0.5, 0.05, [f"optim={name}"], metric="test/rmse",
                    validation=(0.9 if name == "a" else 0.8, 0.05))
        lines, rows = ["member,fold,repeat,seed,split,row,y_true,y_pred"], []
        for f in range(3):
            for seed in range(2):
                for r in folds[f]:
                    pred = float(y[r] + rng.normal(scale=scale))
                    lines.append(f"{2 * f + seed},{f},0,{seed},test,{r},{float(y[r])!r},{pred!r}")
                    rows.append((2 * f + seed, f, 0, seed, r, y[r], pred))
        (path / "predictions.csv").write_text("\n".join(lines) + "\n")
        table = pd.DataFrame(rows, columns=["member", "fold", "repeat", "seed", "row", "y_true", "y_pred"])
        member_mse = ((table.y_pred - table.y_true) ** 2).groupby(table.member).mean()
        fold_mse[name] = member_mse.groupby(member_mse.index // 2).mean().to_numpy()  # seeds averaged per fold
        headline[name] = summarize_table(table, "regression")["test/rmse"]["mean"]
        results = _results(path)
        results["task"] = "regression"
        results["metrics"]["test/rmse"]["mean"] = headline[name]
        (path / "results.json").write_text(json.dumps(results))
    c = compare([tmp_path], metric="rmse")
    vs = c.rows[1]["vs_best"]
    ra, rb = np.sqrt(fold_mse["a"].mean()), np.sqrt(fold_mse["b"].mean())
    assert headline["a"] == pytest.approx(ra)  # the headline is the root of the folds' mean MSE ...
    assert vs["mean"] == pytest.approx(rb - ra) == headline["b"] - headline["a"]  # ... so Δ is their difference
    u = fold_mse["b"] / (2 * rb) - fold_mse["a"] / (2 * ra)
    assert vs["over"] == "3 folds" and vs["se"] == pytest.approx(u.std(ddof=1) / np.sqrt(3))
    assert vs["p"] == pytest.approx(2 * stats.t.sf(abs(rb - ra) / vs["se"], 2))


def test_the_selection_is_paired_on_validation_too_and_labelled(tmp_path):
    from scipy import stats

    # Holdout, one seed: 40 validation rows (100..139) and 60 test rows; a is right on more validation rows.
    val_wrong = {"a": set(range(100, 140, 8)), "b": set(range(100, 140, 8)) | set(range(101, 140, 3))}
    for name, val in (("a", 0.9), ("b", 0.7)):
        path = _run(tmp_path, name, 0.8, 0.05, [f"optim={name}"], validation=(val, 0.05))
        lines = ["member,fold,repeat,seed,split,row,y_true,y_pred,p_0,p_1"]
        for split, rows, wrong in (("val", range(100, 140), val_wrong[name]), ("test", range(60), {1, 2})):
            for row in rows:
                y = row % 2
                pred = 1 - y if row in wrong else y
                lines.append(f"0,0,0,0,{split},{row},{y},{pred},{0.8 - 0.6 * pred:.1f},{0.2 + 0.6 * pred:.1f}")
        (path / "predictions.csv").write_text("\n".join(lines) + "\n")
    c = compare([tmp_path])
    assert [r["run"] for r in c.rows] == ["a", "b"] and c.rows[1]["mark"] == "same"  # identical on test
    d = _correct(range(100, 140), val_wrong["b"]) - _correct(range(100, 140), val_wrong["a"])
    vs = c.rows[1]["val_vs_best"]
    assert vs["mean"] == pytest.approx(d.mean()) and vs["n"] == 40
    assert vs["p"] == pytest.approx(stats.ttest_rel(_correct(range(100, 140), val_wrong["b"]),
                                                    _correct(range(100, 140), val_wrong["a"])).pvalue)
    assert c.rows[0]["val_vs_best"] is None
    caption = " ".join(caption_lines(c))
    assert "On VALIDATION (the selection itself), paired the same way over 40 validation rows: 1 of 1 run" in caption
    record = json.loads(to_json(c))[1]["val_vs_best"]
    assert record["metric"] == "val/accuracy" and record["over"] == "40 validation rows"
    row = list(csv.DictReader(io.StringIO(to_csv(c))))[1]
    assert float(row["val_vs_best"]) == pytest.approx(d.mean()) and float(row["val_vs_best_p"]) == pytest.approx(vs["p"])
    assert row["vs_best"] and float(row["vs_best"]) == 0.0  # the test's paired columns beside it


def test_validation_scores_order_the_rows_when_every_run_has_one(tmp_path):
    # Test says a is best; validation says b: selection must read validation only.
    _holdout(_run(tmp_path, "a", 0.90, 0.01, ["optim=sgd"], validation=(0.70, 0.01)), set(range(0, 60, 10)))
    _holdout(_run(tmp_path, "b", 0.80, 0.01, ["optim=adam"], validation=(0.85, 0.01)), set(range(0, 60, 5)))
    c = compare([tmp_path])
    assert c.by_validation and [r["run"] for r in c.rows] == ["b", "a"]
    # a beats the validation pick on test (6 more rows right, none fewer): marked, never re-ranked.
    assert [r["mark"] for r in c.rows] == ["best", "better"] and c.rows[1]["vs_best"]["mean"] == pytest.approx(0.1)
    md = to_markdown(c)
    assert "compared by validation accuracy" in md and "No validation score" not in md
    assert "| val accuracy ↑ |" in md and "TEST accuracy" in md


def test_missing_override_shows_the_configs_default_and_constant_keys_are_dropped(tmp_path):
    _run(tmp_path, "a", 0.8, 0.01, ["optim.lr=1e-2", "trainer.epochs=3"])
    _run(tmp_path, "b", 0.7, 0.01, ["trainer.epochs=3"])
    _run(tmp_path, "c", 0.6, 0.01, ["optim.lr=0.001", "trainer.epochs=3"])  # equals the default
    c = compare([tmp_path])
    assert c.columns == ["optim.lr"]
    assert [r["overrides"]["optim.lr"] for r in c.rows] == ["0.01", "0.001", "0.001"]
    assert c.constant == {"trainer.epochs": "3"}
    records = json.loads(to_json(c))
    assert records[1]["overrides"] == {"optim.lr": "0.001"}


def test_jobs_without_results_are_noted_not_fatal(tmp_path, capsys):
    _run(tmp_path, "0", 0.8, 0.01, ["optim=sgd"])
    _run(tmp_path, "1", 0.7, 0.01, ["optim=adam"])
    (tmp_path / "2" / ".hydra").mkdir(parents=True)  # a failed job: Hydra wrote its config, no results
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    c = compare([tmp_path])
    assert len(c.rows) == 2 and c.incomplete == [(tmp_path / "2").resolve()]
    assert main(["report", str(tmp_path), "--format", "md"]) == 0
    assert "1 job failed or unfinished, not ranked" in capsys.readouterr().out
    assert list(csv.DictReader(io.StringIO(to_csv(c))))[0]["mark"] == "best"


def test_run_dirs_and_multiruns_mix(tmp_path, sweep):
    sweep_dir, _ = sweep
    single = _run(tmp_path, "single", 0.99, 0.01, ["optim=sgd", "trainer.epochs=20"])
    c = compare([sweep_dir, single])
    assert len(c.rows) == 4 and c.rows[0]["path"] == str(single.resolve())
    assert "trainer.epochs" in c.columns


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    _run(tmp_path, "a", 0.8, 0.01)
    cases = [
        (["report", str(tmp_path / "missing")], "no such file or directory"),
        (["report", str(tmp_path), "--format", "xml"], "choose one of: table, md, csv, json"),
        (["report", str(tmp_path), "--metric", "nope"], "unknown metric 'nope'; choose one of: accuracy"),
        (["report", str(tmp_path / "a" / ".hydra")], "no results.json found under"),
        (["report"], "required: DIR"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_report_help_and_top_level_help_stay_light():
    code = ("import sys; from runner.commands.cli import main; main(['--help']); import runner.evaluate.compare; "
            "assert main(['report', '--help']) == 0; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: runner report" in out and "report DIR..." in out
    assert out.strip().endswith("False")


def test_report_on_a_sweep_imports_only_what_it_uses(sweep):
    sweep_dir, _ = sweep
    code = ("import sys; from runner.commands.cli import main; status = main(['report', %r]); "
            "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn', 'scipy', 'matplotlib', "
            "'pandas', 'hydra', 'tensorboard'}; print(status, sorted(heavy))" % str(sweep_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("0 []"), out[-300:]


def test_a_twelve_run_sweep_table_fits_80_columns_and_says_how_many_share_the_top(tmp_path):
    from rich.console import Console

    from runner.evaluate.compare_views import to_table

    lrs, decays = ("0.01", "0.003", "0.001"), ("0", "0.0001", "0.001", "0.01")
    for i, (lr, wd) in enumerate((a, b) for a in lrs for b in decays):
        # Wilson-like asymmetric intervals; runs 0-2 overlap the best, the rest are far below.
        mean = 0.85 - 0.001 * i if i < 3 else 0.6
        path = _run(tmp_path, str(i), mean, 0.02, [f"optim.lr={lr}", f"optim.weight_decay={wd}",
                                                    "trainer.early_stopping.patience=5"], validation=(mean, 0.02))
        results = _results(path)
        results["metrics"]["test/accuracy"]["ci95"] = [mean - 0.05, mean + 0.02]
        results["metrics"]["test/roc_auc"] = {"mean": 0.9, "se": 0.01, "ci95": [0.88, 0.92], "n": 10}
        (path / "results.json").write_text(json.dumps(results))
        _holdout(path, set(range(0, 60, 5)) | ({i} if i < 3 else set(range(1, 60, 3))))
    c = compare([tmp_path])
    out = io.StringIO()
    Console(file=out, width=80).print(to_table(c, 80))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "val accuracy" in line)
    assert " lr " in header and " weight_decay " in header and "optim.lr" not in header  # shortened keys
    assert "0.850 [.800,.870]" in out.getvalue()  # the asymmetric interval, compact
    assert "3 of 12 runs share the top (★ and ≈)" in out.getvalue().replace("\n", " ")


def test_short_names_keep_keys_apart():
    from runner.evaluate.compare_views import short_names

    assert short_names(["optim.lr", "sched.patience", "trainer.early_stopping.patience"]) == [
        "lr", "sched.patience", "early_stopping.patience"]
    assert short_names(["model", "model.hidden"]) == ["model", "hidden"]


@pytest.mark.parametrize("where, value, named", [
    (("metrics", "test/accuracy", "mean"), "high", "'metrics.test/accuracy.mean'"),
    (("metrics", "test/accuracy", "ci95"), [0.1, None], "'metrics.test/accuracy.ci95'"),
    (("baselines", "majority"), [1], "'baselines.majority'"),
    (("over",), {"rows": 61}, "'over'"),
])
def test_a_results_json_of_the_wrong_shape_is_one_line_naming_the_field(sweep, tmp_path, capsys, where, value, named):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(next(Path(sweep[0]).glob("*/results.json")).parent, run)
    results = _results(run)
    node = results
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    (run / "results.json").write_text(json.dumps(results))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err


def test_a_sweeps_summary_csv_has_the_paired_columns_beside_a_failed_job(tmp_path):
    from runner.evaluate.compare import compare_by_data
    from runner.sweeps.sweep_report import summary_csv

    _holdout(_run(tmp_path, "0", 0.8, 0.05, ["optim=sgd"], validation=(0.9, 0.05)), {1, 2})
    _holdout(_run(tmp_path, "1", 0.7, 0.05, ["optim=adam"], validation=(0.8, 0.05)), {1, 2, 3, 4})
    (tmp_path / "2" / ".hydra").mkdir(parents=True)
    (tmp_path / "2" / "status.json").write_text(json.dumps({"status": "failed", "error": "boom", "job": ["optim=adamw"]}))
    jobs = {"0": {"status": "ok"}, "1": {"status": "ok"}, "2": {"status": "failed", "error": "boom"}}
    rows = list(csv.DictReader(io.StringIO(summary_csv(compare_by_data([tmp_path]), jobs, tmp_path))))
    assert [(r["run"], r["status"], r["mark"], r["optim"]) for r in rows] == [
        ("0", "ok", "best", "sgd"), ("1", "ok", "same", "adam"), ("2", "failed", "", "adamw")]
    assert float(rows[1]["vs_best"]) == pytest.approx(-2 / 60)
    d = _correct(range(60), {1, 2, 3, 4}) - _correct(range(60), {1, 2})
    from scipy import stats

    assert float(rows[1]["vs_best_p"]) == pytest.approx(stats.ttest_rel(_correct(range(60), {1, 2, 3, 4}),
                                                                        _correct(range(60), {1, 2})).pvalue)
    half = stats.t.ppf(0.975, 59) * d.std(ddof=1) / np.sqrt(60)
    assert [float(rows[1]["vs_best_lo"]), float(rows[1]["vs_best_hi"])] == pytest.approx([-2 / 60 - half, -2 / 60 + half])
    assert rows[0]["vs_best"] == rows[2]["vs_best"] == "" and rows[2]["error"] == "boom"


def test_report_on_two_runs_prints_their_paired_difference_on_every_metric(tmp_path, capsys):
    from scipy import stats

    a = _holdout(_run(tmp_path, "a", 0.8, 0.05, ["optim=sgd"], validation=(0.9, 0.05)), {1, 2})
    b = _holdout(_run(tmp_path, "b", 0.7, 0.05, ["optim=adam"], validation=(0.8, 0.05)), {1, 2, 3, 4, 5, 7})
    for path in (a, b):  # the metrics results.json lists are the ones compared
        results = _results(path)
        results["metrics"]["test/log_loss"] = {"mean": 0.5, "se": 0.05, "ci95": [0.4, 0.6], "n": 60}
        results["metrics"]["test/roc_auc"] = {"mean": 0.8, "se": 0.05, "ci95": [0.7, 0.9], "n": 60}
        (path / "results.json").write_text(json.dumps(results))
    assert main(["report", str(a), str(b), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "**b minus a on every test metric, paired over their shared units (60 test rows)**" in out
    # log loss per row: -log 0.8 when right, -log 0.2 when wrong (the p_ columns _predictions writes)
    ll = {name: np.where(_correct(range(60), w) == 1, -np.log(0.8), -np.log(0.2)) for name, w in
          (("a", {1, 2}), ("b", {1, 2, 3, 4, 5, 7}))}
    d = ll["b"] - ll["a"]
    half = stats.t.ppf(0.975, 59) * d.std(ddof=1) / np.sqrt(60)
    assert f"| log_loss ↓ | +{d.mean():.3f} ± {half:.3f} | {stats.ttest_rel(ll['b'], ll['a']).pvalue:.3f} |" in out
    assert "| accuracy ↑ | -0.067 ± " in out and "| roc_auc ↑ | n/a (not a mean over test rows" in out
    assert main(["report", str(a), str(b)]) == 0
    assert "b minus a on every test metric" in capsys.readouterr().out
    assert main(["report", str(a), str(b), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[1]["vs_best_every_metric"]["test/log_loss"]["mean"] == pytest.approx(d.mean())


def test_the_caption_legend_names_every_mark_in_the_table_and_only_those(tmp_path):
    from runner.evaluate.compare import LEGEND

    wrong = {"b": set(range(0, 60, 5)), "a": set(range(0, 60, 5)) | {1, 2}, "c": set(range(0, 60, 5)) | set(range(1, 60, 3))}
    for name, (overrides, val) in {"a": ("optim=sgd", 0.79), "b": ("optim=adam", 0.80), "c": ("optim=adamw", 0.70)}.items():
        _holdout(_run(tmp_path, name, 1 - len(wrong[name]) / 60, 0.1, [overrides], validation=(val, 0.05)), wrong[name])
    _holdout(_run(tmp_path, "d", 0.7, 0.1, ["optim=rmsprop"], validation=(0.6, 0.05)), set(), rows=range(10, 70))
    c = compare([tmp_path])
    assert [r["mark"] for r in c.rows] == ["best", "same", "worse", "not paired"]
    caption = " ".join(caption_lines(c))
    assert ("Marks: " + "; ".join(LEGEND[m] for m in ("best", "same", "worse", "not paired")) + ".") in caption
    assert "▲" not in caption and "Not paired with the best: d: tested other rows than the best" in caption
    assert [r["mark"] for r in csv.DictReader(io.StringIO(to_csv(c)))] == ["best", "same", "worse", "not paired"]
