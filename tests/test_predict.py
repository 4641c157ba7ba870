"""`runner predict`: a run's checkpoint alone reproduces its test predictions on new files; one-line errors."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from runner.cli import main
from runner.paths import bundled_data

QUICK = ["trainer.epochs=12", "trainer.progress=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("predict") / "run"
    assert main(["train", *QUICK, "eval=kfold", "eval.k=3", "model.norm=batch", "model.dropout=0.2",
                 "avg=ema", f"hydra.run.dir={run}"]) == 0
    return run


def _predict(*args):
    return subprocess.run([sys.executable, "-m", "runner.cli", "predict", *map(str, args)], capture_output=True,
                          text=True)


def test_predict_on_the_training_file_reproduces_the_test_predictions(run, tmp_path):
    out = tmp_path / "preds.csv"
    assert _predict(run, "--data", bundled_data("heart.csv"), "--out", out).returncode == 0
    ours = pd.read_csv(out)
    preds = pd.read_csv(run / "predictions.csv")
    test = preds[preds.split == "test"]
    for member, part in test.groupby("member"):
        rows = part["row"].to_numpy()
        np.testing.assert_allclose(ours.loc[rows, f"p_1_m{member}"], part["p_1"], atol=1e-6)
        assert (ours.loc[rows, f"pred_m{member}"].to_numpy() == part["y_pred"].to_numpy()).all()
    members = test["member"].nunique()
    mean = np.mean([ours[f"p_1_m{m}"] for m in range(members)], axis=0)
    np.testing.assert_allclose(ours["p_1"], mean, atol=1e-6)


def test_predict_reads_an_averaged_checkpoint_and_needs_no_target(run, tmp_path):
    table = pd.read_csv(bundled_data("heart.csv")).drop(columns=["num"]).head(7)
    table.to_csv(tmp_path / "new.csv", index=False)
    out = _predict(run, "--data", tmp_path / "new.csv", "--checkpoint", "avg_ema")
    assert out.returncode == 0
    assert len(pd.read_csv(pd.io.common.StringIO(out.stdout))) == 7


def test_predict_imports_neither_sklearn_nor_matplotlib(run):
    code = ("import sys, pathlib; from runner.predict_cli import predict; from runner.paths import bundled_data; "
            f"predict(pathlib.Path({str(run)!r}), bundled_data('heart.csv')); "
            "print('sklearn' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False False", out.stderr


@pytest.mark.parametrize("case,needle", [
    ("no_run", "does not exist (give the directory `runner train` printed)"),
    ("missing_columns", "lacks the feature columns"),
    ("truncated", "is truncated or not a runner checkpoint"),
    ("no_checkpoint", "checkpoints of this run:"),
])
def test_predict_errors_are_one_line_exit_2(run, tmp_path, case, needle):
    data, where, extra = bundled_data("heart.csv"), run, []
    if case == "no_run":
        where = tmp_path / "nowhere"
    elif case == "missing_columns":
        data = tmp_path / "few.csv"
        pd.read_csv(bundled_data("heart.csv"))[["age", "sex"]].to_csv(data, index=False)
    elif case == "truncated":
        where = tmp_path / "copy"
        (where / "checkpoints").mkdir(parents=True)
        (where / "checkpoints" / "best.pt").write_bytes((run / "checkpoints" / "best.pt").read_bytes()[:500])
    else:
        extra = ["--checkpoint", "avg_swa"]
    out = _predict(where, "--data", data, *extra)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
