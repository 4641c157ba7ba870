"""A sweep's terminal: one line per job as it finishes (its full report stays in its run folder), then the summary."""

import json
import re

from runner.commands.cli import main

FAST = ["trainer.epochs=2", "trainer.progress=false", "plots=false"]


def test_a_sweep_prints_one_line_per_job_then_the_summary(tmp_path, capsys):
    sweep = tmp_path / "s"
    assert main(["train", "-m", "optim=sgd,adam,adamw", *FAST, f"hydra.sweep.dir={sweep}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if "runs compared by" in line)
    assert re.fullmatch(r"\[.*\]\[HYDRA\] Launching 3 jobs.*", lines[0])
    jobs = lines[1:start]
    assert len(jobs) == 3  # no per-job table, no Hydra "#0 : optim=sgd" listing
    for number, (line, optim) in enumerate(zip(jobs, ["sgd", "adam", "adamw"])):
        test = json.loads((sweep / str(number) / "results.json").read_text())["metrics"]["test/accuracy"]
        lo, hi = (f"{x:.3f}".lstrip("0") for x in test["ci95"])
        assert line.startswith(f"job {number} ok · optim={optim} · test accuracy {test['mean']:.3f} "
                               f"[{lo},{hi}] · ")  # trainer.epochs, the same in every job, left out
        assert "test metrics, 95% CI" in (sweep / str(number) / "train.log").read_text()  # the job's own table
    assert sum("test metrics, 95% CI" in line for line in lines) == 0


def test_a_failed_job_says_why_on_its_line(tmp_path, capsys):
    sweep = tmp_path / "s"
    assert main(["train", "-m", "dataset.target=num,nope", *FAST, f"hydra.sweep.dir={sweep}"]) == 2
    out = capsys.readouterr()
    job = next(line for line in out.out.splitlines() if line.startswith("job 1 "))
    assert job.startswith("job 1 failed · dataset.target=nope · ") and "nope" in job[len("job 1 failed · "):]
    assert "error: job 1:" in out.err  # and the error lines at the end, as before


def test_a_trials_line_gives_its_numbers_to_3_significant_digits(tmp_path):
    from runner.console import short_override
    from runner.sweeps.sweep_report import job_line

    job = tmp_path / "3"
    job.mkdir()
    (job / "status.json").write_text(json.dumps({"status": "ok", "job": [
        "hparams_search=heart_optuna", "optim.lr=0.004430375245218269", "model.dropout=0.25", "trainer.epochs=1000"]}))
    (job / "results.json").write_text(json.dumps({"selection": {"metric": "accuracy"}, "timing": {"total_s": 1.25},
                                                  "metrics": {"test/accuracy": {"mean": 0.8, "se": 0.05,
                                                                                "ci95": [0.7, 0.9]}}}))
    line = job_line(job, ["hparams_search=heart_optuna"])
    assert line == ("job 3 [green]ok[/] · optim.lr=0.00443 model.dropout=0.25 trainer.epochs=1000 · test accuracy "
                    "0.800±.100 · 1.2 s")
    assert short_override("x=-0.000123456") == "x=-0.000123" and short_override("x=1.5e-05") == "x=1.5e-05"
