"""`runner report` and the end-of-sweep table: a real 3-job sweep, and hand-made runs with known intervals."""

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner.commands.cli import main
from runner.evaluate.compare import compare, interval, overlaps, to_csv, to_json, to_markdown
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


def test_sweep_is_sorted_best_first_and_marked_against_the_best(sweep):
    sweep_dir, _ = sweep
    rows = compare([sweep_dir]).rows
    means = [r["selection"]["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    assert rows[0]["mark"] == "best"
    best = rows[0]["selection"]["ci95"]
    for row in rows[1:]:
        lo, hi = row["selection"]["ci95"]
        expected = "not distinguishable" if lo <= best[1] and best[0] <= hi else "worse"
        assert row["mark"] == expected


def test_sweep_prints_the_comparison_table_at_the_end(sweep):
    sweep_dir, printed = sweep
    tail = printed[printed.rindex("run directory:"):]  # after the last job's own report
    by_validation = compare([sweep_dir]).by_validation
    assert f"3 runs compared by {'validation' if by_validation else 'test'} accuracy" in tail
    assert "optim" in tail and "sgd" in tail and "adamw" in tail and "★ best" in tail
    assert ("No validation score was available" in tail) != by_validation
    assert f"sweep directory: {sweep_dir}" in tail.replace("\n", "")


def test_report_command_formats_parse(sweep, capsys):
    sweep_dir, _ = sweep
    assert main(["report", str(sweep_dir), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in records] == [1, 2, 3] and records[0]["mark"] == "best"
    for r in records:
        assert r["metrics"]["test/accuracy"]["mean"] == _results(r["path"])["metrics"]["test/accuracy"]["mean"]

    assert main(["report", str(sweep_dir), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["optim"] for r in rows] == [r["overrides"]["optim"] for r in records]
    for row in rows:
        d = _results(row["path"])["metrics"]["test/accuracy"]
        assert float(row["test/accuracy"]) == d["mean"]
        assert float(row["test/accuracy_ci95_lo"]) == pytest.approx(d["ci95"][0])

    assert main(["report", str(sweep_dir), "--format", "md"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3
    assert table[0].startswith("| vs best | run | optim | ")
    assert "| accuracy ↑ | balanced_accuracy ↑ |" in table[0] and table[0].endswith("| n | over |")
    assert table[2].startswith("| **★ best** |") and "**" not in table[3]

    assert main(["report", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 runs compared by" in out and "★ best" in out
    assert "≈ not distinguishable" in out or "worse" in out


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


def test_overlapping_intervals_are_not_distinguishable_disjoint_ones_worse(tmp_path):
    _run(tmp_path, "a", 0.79, 0.02, ["optim=sgd"])
    _run(tmp_path, "b", 0.80, 0.02, ["optim=adam"])
    _run(tmp_path, "c", 0.70, 0.02, ["optim=adamw"])
    c = compare([tmp_path])
    assert [(r["run"], r["mark"]) for r in c.rows] == [("b", "best"), ("a", "not distinguishable"), ("c", "worse")]
    # 0.80 ± 0.01 vs 0.70 ± 0.01: far apart; 0.80 ± 0.02 vs 0.79 ± 0.02: overlap.
    assert not overlaps((0.79, 0.81), (0.69, 0.71))
    assert overlaps((0.78, 0.82), (0.77, 0.81))
    assert interval({"mean": 0.5, "se": 0.1}) == pytest.approx((0.5 - 0.196, 0.5 + 0.196))


def test_lower_is_better_metric_sorts_ascending(tmp_path):
    _run(tmp_path, "x", 0.30, 0.01, ["optim=sgd"], metric="test/rmse")
    _run(tmp_path, "y", 0.20, 0.01, ["optim=adam"], metric="test/rmse")
    _run(tmp_path, "z", 0.205, 0.01, ["optim=adamw"], metric="test/rmse")
    rows = compare([tmp_path], metric="rmse").rows
    assert [(r["run"], r["mark"]) for r in rows] == [("y", "best"), ("z", "not distinguishable"), ("x", "worse")]


def test_nadeau_bengio_interval_is_the_one_compared_when_a_run_has_it(tmp_path):
    for name, mean in (("a", 0.80), ("b", 0.75)):
        path = _run(tmp_path, name, mean, 0.01)  # plain intervals far apart...
        results = _results(path)
        results["metrics"]["test/accuracy"]["ci95_nb"] = [mean - 0.04, mean + 0.04]  # ...corrected ones overlap
        (path / "results.json").write_text(json.dumps(results))
    c = compare([tmp_path])
    assert [r["mark"] for r in c.rows] == ["best", "not distinguishable"]
    assert "Nadeau–Bengio" in to_markdown(c)


def test_validation_scores_order_the_rows_when_every_run_has_one(tmp_path):
    # Test says a is best; validation says b: selection must read validation only.
    _run(tmp_path, "a", 0.90, 0.01, ["optim=sgd"], validation=(0.70, 0.01))
    _run(tmp_path, "b", 0.80, 0.01, ["optim=adam"], validation=(0.85, 0.01))
    c = compare([tmp_path])
    assert c.by_validation and [r["run"] for r in c.rows] == ["b", "a"]
    assert [r["mark"] for r in c.rows] == ["best", "worse"]
    md = to_markdown(c)
    assert "compared by validation accuracy" in md and "No validation score" not in md
    assert "| val accuracy ↑ |" in md


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

    from runner.evaluate.compare import to_table

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
    from runner.evaluate.compare import short_names

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
