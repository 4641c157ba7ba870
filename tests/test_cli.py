"""The command line as a user meets it: help, the default run's files, and one-line errors."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from runner.commands.cli import main

FAST = ["trainer.epochs=15", "trainer.progress=false"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "runner.commands.cli", *args], capture_output=True, text=True)


def test_top_level_help_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import sys; from runner.commands.cli import main; main(['--help']);"
                          "print('torch' in sys.modules, 'hydra' in sys.modules)"], capture_output=True, text=True)
    assert "runner train" in out.stdout
    assert out.stdout.strip().endswith("False False")


@pytest.mark.parametrize("override,needle", [
    ("optim.lrr=1", "unknown key 'optim.lrr'"),
    ("model=mpl", "model=mpl is not an option; choose one of: cnn, cnn_vmap, logreg, mlp, module, moe"),
    ("trainer.epochs=abc", "trainer.epochs"),
    ("model.activation=relux", "expected one of [relu, tanh, sigmoid, leaky_relu, gelu]"),
    ("trainer.batch_size=0", "trainer.batch_size=0 is not valid"),
    # a message Hydra wraps over lines comes whole, on one line
    ("+hydra.callbacks.x._target_=os.system", "'os.system' is blocklisted because it allows config data to control"),
])
def test_bad_override_is_one_line_exit_2(tmp_path, override, needle):
    out = _cli("train", override, f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the config was checked


def test_missing_csv_is_one_line_exit_2(tmp_path):
    out = _cli("train", "dataset=csv", f"dataset.path={tmp_path}/nope.csv", "dataset.target=y",
               f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "nope.csv" in out.stderr


def test_default_run_writes_the_contract(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "trainer.seeds=3", f"hydra.run.dir={run}"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["task"] == "binary" and results["dataset"] == "heart" and results["model"] == "mlp"
    assert results["members"] == 3 and results["over"] == "61 test rows, 3 seeds averaged per row"
    acc = results["metrics"]["test/accuracy"]
    assert acc["n"] == 61 and acc["others"]["members"]["n"] == 3
    assert acc["se"] == pytest.approx(acc["sd"] / 61**0.5)
    assert 0 <= acc["ci95"][0] < acc["mean"] < acc["ci95"][1] <= 1
    assert "test/accuracy" in results["baselines"]["majority"]
    timing = results["timing"]
    assert {"imports_s", "data_s", "train_s", "scoring_s", "tensorboard_s", "plots_s", "total_s"} <= set(timing)
    assert sum(v for k, v in timing.items() if k != "total_s") == pytest.approx(timing["total_s"], abs=0.02)

    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    assert list(preds.columns[:8]) == ["member", "fold", "repeat", "seed", "split", "row", "y_true", "y_pred"]
    assert {"p_0", "p_1"} <= set(preds.columns)
    per_member = preds.assign(ok=preds.y_true == preds.y_pred).groupby("member").ok.mean()
    assert acc["mean"] == pytest.approx(per_member.mean())
    assert len(preds) == 3 * 61
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(preds.y_true.astype(str), preds.y_pred.astype(str), labels=["0", "1"])
    assert results["confusion"]["counts"] == counts.tolist()
    assert results["confusion"]["row_normalized"][1][1] == pytest.approx(counts[1, 1] / counts[1].sum())

    splits = json.loads((run / "split_indices.json").read_text())
    assert [s["seed"] for s in splits] == [0, 1, 2]
    assert sorted(splits[0]["train"] + splits[0]["val"] + splits[0]["test"]) == list(range(303))
    assert set(preds.row) == set(splits[0]["test"])

    history = pd.read_csv(run / "metrics.csv")
    assert list(history.columns) == ["member", "epoch", "train/loss", "val/accuracy", "val/loss", "lr"]
    assert history.groupby("member").epoch.max().tolist() == [14, 14, 14]
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)
        assert state["flat"].shape == (3, 481)
    # One folder named by the overrides: TensorBoard's run, with its HPARAMS record and its members' curves.
    assert [p.name for p in (run / "tensorboard").iterdir()] == ["trainer.epochs=15,trainer.seeds=3"]
    assert sorted(p.name for p in (run / "tensorboard" / "trainer.epochs=15,trainer.seeds=3").iterdir())[1:] == [
        "events.out.tfevents.hparams"]  # and the members' curves, their mean and band
    for name in ("report.md", "report.csv"):
        assert (run / name).stat().st_size > 0


def test_timing_covers_the_process_from_start_to_exit(tmp_path):
    start = time.perf_counter()
    out = _cli("train", *FAST, f"hydra.run.dir={tmp_path}/run")
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    timing = json.loads((tmp_path / "run" / "results.json").read_text())["timing"]
    assert timing["total_s"] == pytest.approx(wall, rel=0.05)
    assert timing["startup_s"] > 0 and timing["imports_s"] > timing["startup_s"]  # torch alone takes longer
    assert sum(v for k, v in timing.items() if k != "total_s") == pytest.approx(timing["total_s"], abs=0.02)


def test_default_run_imports_no_sklearn_scipy_stats_or_tensorboard(tmp_path):
    # Splits, label codes, preprocessing and scoring are numpy; t quantiles come from scipy.special.
    code = ("import sys; from runner.commands.cli import main; status = main(['train', 'trainer.epochs=2', "
            f"'trainer.progress=false', 'hydra.run.dir={tmp_path}/run']); "
            "print(status, sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'tensorboard', "
            "'google') or m.startswith('scipy.stats')))")  # google: protobuf
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("0 []"), out[-500:]


def test_logreg_has_no_hidden_layer(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "model=logreg", "optim=sgd", "optim.lr=0.1", *FAST, f"hydra.run.dir={run}"]) == 0
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert state["flat"].shape == (1, 28 + 1)


@pytest.mark.parametrize("args", [["--version"], ["train", "--version"]])
def test_version_is_the_installed_distributions(args):
    from importlib.metadata import version

    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"runner {project['version']}\n"
    assert version(project["name"]) == project["version"]  # the name pip installed is the one pyproject gives


def test_threads_follow_free_cores(monkeypatch):
    from runner.engine import device

    cpu = torch.device("cpu")
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "usable_cores", lambda: 4)
        monkeypatch.setattr(device, "free_cores", lambda: 3)
        device.configure_threads(None, cpu, 53_000_000)  # the README's digits CNN step
        assert torch.get_num_threads() == 3
        device.configure_threads(None, cpu, 1_000_000)  # a small step: one thread whatever is free
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(device, "free_cores", lambda: 1)
        device.configure_threads(None, cpu, 53_000_000)
        assert torch.get_num_threads() == 1
        device.configure_threads(2, cpu, 53_000_000)  # trainer.threads wins
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # reads the whole machine's load: another process on a shared CI host would move it
def test_free_cores_sees_a_busy_core():
    from runner.engine.device import free_cores

    idle = free_cores(0.3)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        assert free_cores(0.3) == idle - 1 or idle == 1
    finally:
        busy.kill()
        busy.wait()


def test_openmp_waits_passively_under_the_command():
    done = _cli("train", "--cfg", "job")  # through main(), as the installed `runner` runs
    assert done.returncode == 0
    code = "from runner.commands.cli import main; import os; main(['--help']); print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.splitlines()[-1] == "PASSIVE"


def test_train_help_lists_groups_without_torch_and_builds_the_config_repository_once():
    # Hydra builds a repository (a deep copy of every config) per group it lists: 115 for --help, seconds.
    code = """if True:
        import io, sys
        from hydra._internal import config_repository
        built, init = [], config_repository.CachingConfigRepository.__init__
        config_repository.CachingConfigRepository.__init__ = lambda self, d: (built.append(1), init(self, d))[1]
        from runner.commands.cli import main
        sys.stdout = out = io.StringIO()
        try:
            main(["train", "--help"])
        except SystemExit as exc:
            status = exc.code
        sys.stdout = sys.__stdout__
        print(out.getvalue())
        print(status, len(built), "torch" in sys.modules)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "model: cnn, cnn_vmap, logreg, mlp, module, moe" in out
    assert "optim: adagrad, adam, adamw, rmsprop, sgd" in out
    assert out.splitlines()[-1] == "0 2 False"


def test_bash_completion_completes_runner_train_overrides(tmp_path):
    import os
    import shutil
    from pathlib import Path

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = """
        eval "$(runner train -sc install=bash)"
        complete -p runner
        ask() { COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($1); COMP_CWORD=$2
                hydra_bash_completion; echo "${COMPREPLY[*]}"; }
        ask "runner train opt" 2
        ask "runner train optim=" 2
        ask "runner re" 1
    """
    bin_dir = str(Path(sys.executable).parent)  # where the installed `runner` command is
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    registered, opt, optim, sub = done.stdout.splitlines()
    assert "error" not in done.stderr, done.stderr
    assert registered.endswith("-F hydra_bash_completion runner")  # the `runner` command, not `train`
    assert "optim=" in opt.split()
    assert set(optim.split()) == {"optim=adagrad", "optim=adam", "optim=adamw", "optim=rmsprop", "optim=sgd"}
    assert sub.split() == ["resume", "report"]
