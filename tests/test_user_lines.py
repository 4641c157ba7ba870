"""Lines that name the real problem (a device given as data, a loader's row, what a forward returned, NaN at
the initial weights, model keys a model never reads), and the Python surface (runner.RunnerError, a run folder
given as hydra.run.dir, Result.predict's inputs, model= rather than --model)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import runner
from runner.config.schema import DatasetConfig
from runner.data.loading import load_dataset
from runner.errors import RunnerError
from runner.models.probes import check_output

QUICK = {"trainer": {"epochs": 2, "progress": False}, "plots": False}


# ---------------------------------------------------------------- data that is not a regular file


def test_a_device_or_a_fifo_as_dataset_path_is_not_a_regular_file(tmp_path):
    with pytest.raises(RunnerError) as info:
        load_dataset(DatasetConfig(name="csv", path="/dev/zero", target="y"))
    assert str(info.value) == "dataset.path=/dev/zero is a character device, not a regular file; give a CSV file"
    pipe = tmp_path / "rows.csv"
    os.mkfifo(pipe)
    with pytest.raises(RunnerError) as info:  # refused before anything opens it (opening a FIFO would block)
        load_dataset(DatasetConfig(name="csv", path=str(pipe), target="y"))
    assert str(info.value) == f"dataset.path={pipe} is a FIFO (named pipe), not a regular file; give a CSV file"
    with pytest.raises(RunnerError, match="does not exist"):  # what is really missing still says so
        load_dataset(DatasetConfig(name="csv", path=str(tmp_path / "absent.csv"), target="y"))


# ---------------------------------------------------------------- a loader's rows


@pytest.fixture
def loaders(tmp_path, monkeypatch):
    (tmp_path / "rowsource.py").write_text(textwrap.dedent("""
        import numpy as np
        import pandas as pd

        def with_inf():
            X = np.arange(60, dtype=float).reshape(20, 3)
            X[7, 1] = np.inf
            return X, np.arange(20) % 2

        def with_text():
            x = [str(i) for i in range(20)]
            x[3] = "?"
            return pd.DataFrame({"x": x, "z": np.arange(20.0), "y": np.arange(20) % 2})
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("rowsource", None)


def test_a_loaders_bad_value_is_named_by_its_row_not_a_line(loaders):
    with pytest.raises(RunnerError) as info:
        load_dataset(DatasetConfig(name="python", loader="rowsource:with_inf"))
    assert str(info.value).startswith("column 'x1' of what dataset.loader=rowsource:with_inf returned holds inf in "
                                      "row 7 (1 such row); ")
    with pytest.raises(RunnerError) as info:
        load_dataset(DatasetConfig(name="python", loader="rowsource:with_text", target="y", numeric=["x"]))
    assert str(info.value).startswith("dataset.numeric lists 'x' but it holds non-numbers in the table "
                                      "dataset.loader=rowsource:with_text returned: 1 of 20 cells: '?' (row 3); "
                                      "clean those cells, read them as missing")


# ---------------------------------------------------------------- what a forward returns


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)

    def forward(self, x):
        return self.a(x), x


class Named(Pair):
    def forward(self, x):
        return {"logits": self.a(x), "aux": x}


def test_a_forward_returning_a_tuple_or_a_dict_is_told_to_return_one_tensor():
    with pytest.raises(RunnerError) as info:
        check_output(Pair(), "nets:Pair", (3,), 1)
    assert str(info.value) == ("model.target=nets:Pair: for 2 rows of shape [3] its forward returns a tuple of 2 "
                               "(Tensor [2, 1], Tensor [2, 3]); forward must return one tensor, [2, 1] here "
                               "(return the logits or predictions alone)")
    with pytest.raises(RunnerError) as info:
        check_output(Named(), "nets:Named", (3,), 1)
    assert "its forward returns a dict with keys 'logits', 'aux'; forward must return one tensor" in str(info.value)
    assert "out_features" not in str(info.value)


class NotANumber(nn.Module):
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a = nn.Linear(input_shape[0], out_features)

    def forward(self, x):
        return self.a(x) * float("nan")


def test_nan_at_the_initial_weights_is_not_blamed_on_the_learning_rate(tmp_path):
    with pytest.raises(RunnerError) as info:
        runner.train(model=NotANumber, run_dir=tmp_path / "run", **QUICK)
    assert str(info.value) == ("the training loss is not finite at the initial weights, before any step (every "
                               "member, epoch 0): the model's forward or the data gives NaN or inf, which optim.lr "
                               "cannot cure; check the forward (log of 0, division by zero, an uninitialized "
                               "parameter)")
    # divergence from a finite start still says optim.lr: tests/test_resume.py::test_all_members_diverged_...


# ---------------------------------------------------------------- model keys a model never reads


@pytest.mark.parametrize("override,shown", [("model.hidden=[32]", "model.hidden=[32]"),
                                            ("model.dropout=0.3", "model.dropout=0.3"),
                                            ("model.norm=batch", "model.norm=batch")])
def test_model_module_refuses_runners_own_layer_keys(tmp_path, train, override, shown):
    status, _, err = train("model=module", "model.target=nowhere:Net", override, "trainer.progress=false",
                           f"hydra.run.dir={tmp_path}/run")
    users = "mlp/logreg" if "hidden" in override else "mlp/logreg/cnn/cnn_vmap"
    assert status == 2 and err == (f"error: {shown} has no effect with model=module: only model={users} use it "
                                   "(remove it, or choose model=mlp)\n")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the Python surface


def test_runner_error_is_exported_and_import_runner_stays_light():
    out = subprocess.run([sys.executable, "-c", "import sys, runner; print(runner.RunnerError.__module__, "
                          "'torch' in sys.modules, 'pandas' in sys.modules, 'hydra' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.split() == ["runner.errors", "False", "False", "False"], out.stderr
    assert runner.RunnerError is RunnerError and "RunnerError" in runner.__all__


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """diabetes (numbers only), 2 epochs, its run folder given as Hydra's own key from Python."""
    folder = tmp_path_factory.mktemp("api") / "given"
    return runner.train(data="diabetes", hydra={"run": {"dir": str(folder)}}, **QUICK), folder


def test_hydra_run_dir_from_python_is_honoured_and_a_second_folder_refused(trained, tmp_path):
    result, folder = trained
    assert result.run_dir == folder and (folder / "results.json").is_file()
    with pytest.raises(RunnerError) as info:
        runner.train(hydra={"run": {"dir": str(tmp_path / "a")}}, run_dir=tmp_path / "b", **QUICK)
    assert str(info.value) == (f"hydra.run.dir={tmp_path / 'a'} and run_dir={tmp_path / 'b'} name two folders; "
                               "give the folder once (run_dir=...)")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_result_predict_takes_a_frame_or_rows_and_refuses_anything_else_in_one_line(trained):
    from runner.data.generated import GENERATED

    result, _ = trained
    rows = GENERATED["diabetes"]().drop(columns=["progression"]).head(5)
    by_frame = result.predict(rows)
    assert len(by_frame) == 5 and np.isfinite(by_frame["mean.pred"]).all()
    pd.testing.assert_frame_equal(result.predict(rows.to_numpy()), by_frame)  # the file's column order
    pd.testing.assert_frame_equal(result.predict(rows.to_numpy().tolist()), by_frame)
    with pytest.raises(RunnerError) as info:
        result.predict(rows.to_numpy()[:, :2])
    assert str(info.value).startswith("Result.predict: the rows have shape [5, 2]; give [n, 10] rows of the run's "
                                      "features age, sex, bmi,")
    for bad in (None, 3.5, {"age": [60]}):
        with pytest.raises(RunnerError) as info:
            result.predict(bad)
        assert str(info.value) == ("Result.predict takes a DataFrame, an ndarray or list of rows, or a CSV path, "
                                   f"not {type(bad).__name__}")


def test_a_message_inside_python_names_model_not_the_shells_flag(tmp_path):
    from runner.commands.predict import _check_own_model

    state = {"model": "module", "model_config": {"target": "nets:Net"}}
    with pytest.raises(RunnerError) as info:
        _check_own_model(state, None, tmp_path, python=True)
    assert str(info.value).endswith(f"so name it yourself: runner.load({str(tmp_path)!r}, model=Net)")
    with pytest.raises(RunnerError) as info:
        _check_own_model(state, "nets:Other", tmp_path, python=True)
    assert str(info.value).startswith("model=nets:Other: ") and "--model" not in str(info.value)
    with pytest.raises(RunnerError, match="name it yourself: --model nets:Net$"):
        _check_own_model(state, None, tmp_path)  # the shell's line
