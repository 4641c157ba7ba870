"""`runner predict`: a run's checkpoint alone reproduces its test predictions on new files, through training's own
rules (finiteness, imputation, diverged members left out); every user error is one line, exit 2."""

import errno
import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import runner.finish
from runner.commands.cli import main
from runner.paths import bundled_data

QUICK = ["trainer.epochs=12", "trainer.progress=false"]
TINY = ["trainer.epochs=3", "trainer.progress=false", "plots=false", "dataset=csv", "dataset.target=label"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # chmod does not keep root out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Heart, 3 folds (3 members), batch norm, dropout and an EMA: its training file has missing cells."""
    run = tmp_path_factory.mktemp("predict") / "run"
    assert main(["train", *QUICK, "eval=kfold", "eval.k=3", "model.norm=batch", "model.dropout=0.2",
                 "avg=ema", f"hydra.run.dir={run}"]) == 0
    return run


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """60 rows without a missing cell; the classes `yes` and `yes_m0` collide with a `p_<class>_m<i>` naming."""
    rng = np.random.default_rng(0)
    x1, x2, color = rng.normal(size=60), rng.normal(size=60) * 10 + 50, rng.choice(["red", "blue"], 60)
    label = np.where(x1 + (color == "red") + rng.normal(size=60) * 0.5 > 0.5, "yes", "yes_m0")
    path = tmp_path_factory.mktemp("tiny") / "tiny.csv"
    pd.DataFrame({"x1": x1.round(3), "x2": x2.round(2), "color": color, "label": label}).to_csv(path, index=False)
    return path


def _train_tiny(tmp_path_factory, csv, *args):
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    assert main(["train", *TINY, f"dataset.path={csv}", f"hydra.run.dir={run}", *args]) == 0
    return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_csv):
    """One member trained on tiny_csv: no fill in its checkpoint (training had nothing to impute)."""
    return _train_tiny(tmp_path_factory, tiny_csv)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, tiny_csv):
    """Three seeds of which training's divergence check reports member 1 (as a non-finite loss would)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.finish, "_diverged", lambda result, members: [{"member": 1, "epoch": 2}])
        return _train_tiny(tmp_path_factory, tiny_csv, "trainer.seeds=3")


def _cli(capsys, *args):
    """`runner predict ARGS` in-process: (exit status, stdout, stderr)."""
    status = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


def _predicted(capsys, *args) -> pd.DataFrame:
    status, out, err = _cli(capsys, *args)
    assert status == 0 and err == "", err
    return pd.read_csv(io.StringIO(out))


def _error(capsys, *args) -> str:
    """The one line `error: ...` a refused predict prints (exit 2, nothing on stdout, no traceback)."""
    status, out, err = _cli(capsys, *args)
    lines = err.strip().splitlines()
    assert status == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _features(csv, rows=None) -> pd.DataFrame:
    table = pd.read_csv(csv).drop(columns=["num", "label"], errors="ignore")
    return table if rows is None else table.head(rows)


def _test_rows(run, ours: pd.DataFrame, classes: list[str]) -> int:
    """Check every member's columns against the run's own test predictions; returns the members checked."""
    preds = pd.read_csv(run / "predictions.csv", dtype={"y_pred": str})
    test = preds[preds.split == "test"]
    for member, part in test.groupby("member"):
        rows = part["row"].to_numpy()
        for c in classes:
            np.testing.assert_allclose(ours.loc[rows, f"m{member}.p_{c}"], part[f"p_{c}"], atol=1e-6)
        assert (ours.loc[rows, f"m{member}.pred"].astype(str).to_numpy() == part["y_pred"].to_numpy()).all()
    return test["member"].nunique()


def test_predict_on_the_training_file_reproduces_the_test_predictions(run, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    status, printed, _ = _cli(capsys, run, "--data", bundled_data("heart.csv"), "--out", out)
    ours = pd.read_csv(out)
    members = _test_rows(run, ours, ["0", "1"])
    assert status == 0 and printed == f"303 rows predicted by {members} members and their mean: {out}\n"
    mean = np.mean([ours[f"m{m}.p_1"] for m in range(members)], axis=0)
    np.testing.assert_allclose(ours["mean.p_1"], mean, atol=1e-6)
    assert (ours["mean.pred"] == (ours["mean.p_1"] > ours["mean.p_0"]).astype(int)).all()


def test_predict_reads_an_averaged_checkpoint_and_needs_no_target(run, tmp_path, capsys):
    _features(bundled_data("heart.csv"), 7).to_csv(tmp_path / "new.csv", index=False)
    assert len(_predicted(capsys, run, "--data", tmp_path / "new.csv", "--checkpoint", "avg_ema")) == 7


def test_predict_imports_neither_sklearn_nor_matplotlib(run):
    code = ("import sys, pathlib; from runner.commands.predict import predict; from runner.paths import bundled_data; "
            f"predict(pathlib.Path({str(run)!r}), bundled_data('heart.csv')); "
            "print('sklearn' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False False", out.stderr


def test_a_successful_predict_prints_nothing_on_stderr(tiny, tiny_csv):
    # One member and no fill: the case that handed torch a read-only (broadcast) array and printed its two-line
    # "not writable" warning. A process of its own, because torch prints that warning once per process.
    out = subprocess.run([sys.executable, "-m", "runner.commands.cli", "predict", str(tiny), "--data", str(tiny_csv)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == ""
    assert len(pd.read_csv(io.StringIO(out.stdout))) == 60


def test_column_names_cannot_collide_whatever_the_class_names(tiny, tiny_csv, capsys):
    ours = _predicted(capsys, tiny, "--data", tiny_csv)
    assert list(ours.columns) == ["row", "m0.pred", "m0.p_yes", "m0.p_yes_m0", "mean.pred", "mean.p_yes",
                                  "mean.p_yes_m0"]
    assert _test_rows(tiny, ours, ["yes", "yes_m0"]) == 1
    np.testing.assert_allclose(ours["m0.p_yes"] + ours["m0.p_yes_m0"], 1, atol=1e-6)
    np.testing.assert_allclose(ours["mean.p_yes_m0"], ours["m0.p_yes_m0"])


def test_a_missing_cell_is_imputed_as_each_member_was_trained(run, tmp_path, capsys):
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    fill, numeric = state["preprocessing"]["fill"].numpy(), state["numeric"]
    start = len(numeric) + sum(len(state["categories"][c]) for c in state["categorical"][:-1])
    assert state["categorical"][-1] == "thal"
    heart, table = pd.read_csv(bundled_data("heart.csv")), _features(bundled_data("heart.csv"), 6)
    age, thal = table.loc[[2]].copy(), table.loc[[4]].copy()
    table.loc[2, "age"], table.loc[4, "thal"] = np.nan, np.nan
    # Then each member's own fill written out: member e must answer the missing cell as it answers its fill.
    splits = json.loads((run / "split_indices.json").read_text())
    for e in range(3):
        assert fill[e, numeric.index("age")] == np.median(heart["age"].to_numpy()[splits[e]["train"]])
        age["age"], thal["thal"] = fill[e, numeric.index("age")], state["categories"]["thal"][
            int(fill[e, start:].argmax())]
        table = pd.concat([table, age, thal], ignore_index=True)
    table.to_csv(tmp_path / "new.csv", index=False)
    ours = _predicted(capsys, run, "--data", tmp_path / "new.csv")
    assert not ours.isna().any().any()
    for e in range(3):
        for missing, filled in ((2, 6 + 2 * e), (4, 7 + 2 * e)):
            np.testing.assert_allclose(ours.loc[missing, f"m{e}.p_1"], ours.loc[filled, f"m{e}.p_1"], atol=1e-6)
            assert ours.loc[missing, f"m{e}.pred"] == ours.loc[filled, f"m{e}.pred"]


@pytest.mark.parametrize("column,rows,needle", [
    ("x1", [3], "column 'x1' of {f} has a missing cell in row 3 (line 5), but the run's training data had none "
                "to learn an imputation from: fill it"),
    ("color", [1, 4], "column 'color' of {f} has missing cells in rows 1, 4 (lines 3, 6), but the run's "
                      "training data had none to learn an imputation from: fill them"),
])
def test_a_missing_cell_without_a_learned_imputation_is_refused(tiny, tiny_csv, tmp_path, capsys, column, rows,
                                                                 needle):
    table = _features(tiny_csv, 8)
    table.loc[rows, column] = np.nan
    table.to_csv(tmp_path / "new.csv", index=False)
    assert _error(capsys, tiny, "--data", tmp_path / "new.csv") == f"error: {needle.format(f=tmp_path / 'new.csv')}"


@pytest.mark.parametrize("value,shown", [("inf", "inf"), ("-inf", "-inf"), ("1e30", "1e+30")])
def test_values_training_refuses_are_refused(tiny, tiny_csv, tmp_path, capsys, value, shown):
    table = _features(tiny_csv, 8).astype({"x2": object})
    table.loc[2, "x2"] = value
    table.to_csv(tmp_path / "new.csv", index=False)
    assert _error(capsys, tiny, "--data", tmp_path / "new.csv") == (
        f"error: column 'x2' of {tmp_path / 'new.csv'} holds {shown} on line 4 (1 such row); runner trains on "
        "finite values of magnitude <= 1e+18: fix them")


def test_new_rows_read_training_s_missing_marks_as_missing(tmp_path_factory, tiny_csv, tmp_path, capsys):
    table = pd.read_csv(tiny_csv).astype({"x2": object})
    table.loc[[5, 9], "x2"] = "?"
    table.to_csv(tmp_path / "marked.csv", index=False)
    marked = _train_tiny(tmp_path_factory, tmp_path / "marked.csv", "dataset.na_values=['?']")
    capsys.readouterr()  # training's own report
    fill = torch.load(marked / "checkpoints" / "best.pt", weights_only=True)["preprocessing"]["fill"].numpy()
    new = table.drop(columns=["label"]).loc[[5, 5]]
    new.iloc[1, new.columns.get_loc("x2")] = fill[0, 1]  # x2 is the second numeric column
    new.to_csv(tmp_path / "new.csv", index=False)
    ours = _predicted(capsys, marked, "--data", tmp_path / "new.csv")
    np.testing.assert_allclose(ours.loc[0, "m0.p_yes"], ours.loc[1, "m0.p_yes"], atol=1e-6)
    train = json.loads((marked / "split_indices.json").read_text())[0]["train"]
    assert fill[0, 1] == np.nanmedian(pd.to_numeric(table["x2"], errors="coerce").to_numpy()[train])


def test_diverged_members_are_recorded_and_left_out_of_the_mean(diverged, tiny_csv, tmp_path, capsys):
    for name in ("best", "last"):
        assert torch.load(diverged / "checkpoints" / f"{name}.pt", weights_only=True)["diverged"] == [1]
    status, out, err = _cli(capsys, diverged, "--data", tiny_csv)
    assert status == 0 and err == ("note: member 1 diverged in training: no columns here and left out of the "
                                   "mean (as from every table of the run)\n")
    ours = pd.read_csv(io.StringIO(out))
    assert [c for c in ours.columns if c.startswith("m1.")] == []
    kept = (ours["m0.p_yes"] + ours["m2.p_yes"]) / 2
    np.testing.assert_allclose(ours["mean.p_yes"], kept, atol=1e-6)
    assert (ours["mean.pred"] == np.where(ours["mean.p_yes"] > ours["mean.p_yes_m0"], "yes", "yes_m0")).all()

    # The same weights with the list emptied: the mean is over all three, so the list is what left member 1 out.
    state = torch.load(diverged / "checkpoints" / "best.pt", weights_only=True)
    (tmp_path / "all" / "checkpoints").mkdir(parents=True)
    torch.save({**state, "diverged": []}, tmp_path / "all" / "checkpoints" / "best.pt")
    everyone = _predicted(capsys, tmp_path / "all", "--data", tiny_csv)
    np.testing.assert_allclose(everyone[["m0.p_yes", "m2.p_yes"]], ours[["m0.p_yes", "m2.p_yes"]])
    np.testing.assert_allclose(everyone["mean.p_yes"], everyone[["m0.p_yes", "m1.p_yes", "m2.p_yes"]].mean(axis=1),
                               atol=1e-6)
    assert not np.allclose(everyone["mean.p_yes"], ours["mean.p_yes"])


def test_a_mixture_of_experts_mixes_in_the_tasks_space(tmp_path_factory, tiny_csv, capsys):
    moe = _train_tiny(tmp_path_factory, tiny_csv, "model=moe", "model.experts=2")
    capsys.readouterr()  # training's own report
    assert _test_rows(moe, _predicted(capsys, moe, "--data", tiny_csv), ["yes", "yes_m0"]) == 1


@pytest.mark.parametrize("case,needle", [
    ("no_run", "does not exist (give the directory `runner train` printed)"),
    ("missing_columns", "lacks the feature columns"),
    ("truncated", "is truncated or not a runner checkpoint"),
    ("no_checkpoint", "checkpoints of this run:"),
    ("data_folder", "is a folder; give a CSV file with --data"),
    ("out_folder", "is a folder; give a file path for the predictions CSV"),
    ("out_in_missing_folder", "does not exist (create it, or choose another --out)"),
])
def test_predict_errors_are_one_line_exit_2(run, tmp_path, capsys, case, needle):
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
    elif case == "no_checkpoint":
        extra = ["--checkpoint", "avg_swa"]
    elif case == "data_folder":
        data = tmp_path
    elif case == "out_folder":
        extra = ["--out", tmp_path]
    else:
        extra = ["--out", tmp_path / "missing" / "preds.csv"]
    assert needle in _error(capsys, where, "--data", data, *extra)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(ROOT, reason="runs as root: chmod keeps no file or folder from root")
@pytest.mark.parametrize("case", ["data", "out"])
def test_an_unreadable_data_file_or_a_read_only_out_folder_is_one_line(tiny, tiny_csv, tmp_path, capsys, case):
    locked = tmp_path / "locked"
    locked.mkdir()
    data, out = tiny_csv, tmp_path / "preds.csv"
    if case == "data":
        data = locked / "new.csv"
        data.write_bytes(tiny_csv.read_bytes())
        data.chmod(0)
    else:
        out = locked / "preds.csv"
        locked.chmod(0o555)
    try:
        line = _error(capsys, tiny, "--data", data, "--out", out)
    finally:
        (data if case == "data" else locked).chmod(0o755)
    fix = "make it readable" if case == "data" else "make the folder writable"
    assert "Permission denied" in line and fix in line
    assert sorted(p.name for p in locked.iterdir()) == (["new.csv"] if case == "data" else [])


def test_a_device_as_data_is_not_a_regular_file(tiny, capsys):
    assert _error(capsys, tiny, "--data", "/dev/zero") == ("error: --data /dev/zero is a character device, not a "
                                                           "regular file; give a CSV file with --data")


def test_a_failed_write_leaves_the_old_out_file_and_no_partial_one(tiny, tiny_csv, tmp_path, capsys, monkeypatch):
    out = tmp_path / "preds.csv"
    out.write_text("old\n")

    def full_disk(self, file, **kw):
        file.write(b"row,m0.pred\n0,")  # the open file write_atomic gives to_csv is binary
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    line = _error(capsys, tiny, "--data", tiny_csv, "--out", out)
    assert line == (f"error: cannot write --out {out}: No space left on device; nothing was written (free space or "
                    "choose another --out)")
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv"]


def test_out_replaces_a_link_and_never_writes_through_it(tiny, tiny_csv, tmp_path, capsys):
    victim, out = tmp_path / "victim.txt", tmp_path / "preds.csv"
    victim.write_text("keep me\n")
    out.symlink_to(victim)
    assert _cli(capsys, tiny, "--data", tiny_csv, "--out", out)[0] == 0
    assert victim.read_text() == "keep me\n" and not out.is_symlink()
    assert len(pd.read_csv(out)) == 60 and oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv", "victim.txt"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("field,value,needle", [
    (None, [1, 2], "malformed top level"),
    ("members", [{"member": "0"}], "malformed members list"),
    ("members", {"member": 0}, "malformed members list"),
    ("classes", [0, 1], "malformed classes list"),
    ("classes", ["yes", "yes"], "malformed classes list"),
    ("input_shape", ["4"], "malformed input_shape"),
    ("input_shape", [5], "malformed input_shape for its 4 feature columns"),
    ("diverged", [0], "malformed diverged list"),
    ("diverged", "1", "malformed diverged list"),
    ("categories", {"color": [1, 2]}, "malformed table columns"),
    ("preprocessing", {"shift": torch.zeros(1, 2)}, "malformed preprocessing"),
    ("flat", [0.0], "malformed weights"),
    ("flat", torch.zeros(1, 3), "its weights do not fit its model spec (RuntimeError)"),
    ("model_config", {"widths": [4]}, "its weights do not fit its model spec (TypeError)"),
])
def test_a_checkpoint_with_wrong_types_is_one_line(tiny, tiny_csv, tmp_path, capsys, field, value, needle):
    state = torch.load(tiny / "checkpoints" / "best.pt", weights_only=True)
    (tmp_path / "bad" / "checkpoints").mkdir(parents=True)
    torch.save(value if field is None else {**state, field: value}, tmp_path / "bad" / "checkpoints" / "best.pt")
    assert needle in _error(capsys, tmp_path / "bad", "--data", tiny_csv)


def test_a_non_finite_prediction_never_reaches_the_output(tiny, tiny_csv, tmp_path, capsys):
    state = torch.load(tiny / "checkpoints" / "best.pt", weights_only=True)
    (tmp_path / "nan" / "checkpoints").mkdir(parents=True)
    torch.save({**state, "flat": torch.full_like(state["flat"], float("nan"))},
               tmp_path / "nan" / "checkpoints" / "best.pt")
    assert _error(capsys, tmp_path / "nan", "--data", tiny_csv) == (
        f"error: member 0 predicts a non-finite value for every row of {tiny_csv}: its weights are not finite, the "
        "checkpoint is damaged (train the run again)")
    # Rows far outside the training range (finite, within training's 1e18 limit) overflow float32 in the model.
    table = _features(tiny_csv, 8)
    table.loc[[2, 6], "x1"] = 1e17
    table.to_csv(tmp_path / "far.csv", index=False)
    state["flat"] *= 1e14  # those two rows overflow to +inf and -inf inside, NaN out; the others stay finite
    torch.save(state, tmp_path / "nan" / "checkpoints" / "best.pt")
    assert _error(capsys, tmp_path / "nan", "--data", tmp_path / "far.csv") == (
        f"error: member 0 predicts a non-finite value for rows 2, 6 (lines 4, 8) of {tmp_path / 'far.csv'}; those "
        "rows lie far outside what the run trained on: check their values")


def test_a_reader_that_stops_early_ends_predict_quietly(tiny, tiny_csv, tmp_path):
    """`runner predict ... | head -1`: the closed pipe ends the command as it ends `cat`, with no traceback."""
    big = tmp_path / "big.csv"
    lines = tiny_csv.read_text().splitlines()
    big.write_text("\n".join([lines[0], *lines[1:] * 400]) + "\n")  # more than a pipe's buffer of predictions
    proc = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "predict", str(tiny), "--data", str(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"row,")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
