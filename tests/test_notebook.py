"""runner from a notebook: names from the user's own objects, one clean error, no Hydra log lines in a cell."""

import inspect
import json
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import runner


class TwoLayer(nn.Module):
    def __init__(self, input_shape, out_features, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, out_features))

    def forward(self, x):
        return self.body(x)


def blobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def broken():
    raise ValueError("no such file")


def test_a_user_error_is_one_clean_runner_error_in_the_calls_terms(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # runner train hands sys.argv to Hydra
    assert runner.RunnerError is runner.errors.RunnerError
    with pytest.raises(runner.RunnerError) as caught:
        runner.train(model=TwoLayer, data=broken, run_dir=tmp_path / "run")
    assert str(caught.value) == "data=broken: calling it failed: ValueError: no such file (set dataset.args)"
    assert capsys.readouterr().err == ""  # said once: by the exception, not also on stderr
    # The caller's frame, then runner.train's own, which IPython and pytest hide (__tracebackhide__).
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert [f.name for f in frames] == ["test_a_user_error_is_one_clean_runner_error_in_the_calls_terms", "train"]
    assert caught.value.__traceback__.tb_next.tb_frame.f_locals["__tracebackhide__"] is True
    assert caught.value.__suppress_context__


def test_a_run_of_your_own_class_and_function_is_named_after_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.chdir(tmp_path)
    result = runner.train(model=TwoLayer, data=blobs, trainer={"epochs": 2, "progress": False}, plots=False,
                          run_dir="run")
    assert result.run_dir == tmp_path / "run" and result.run_dir.is_absolute()
    out = capsys.readouterr().out
    assert out.startswith("blobs: 120 rows") and "TwoLayer (" in out and "__main__" not in out and "module" not in out
    assert result.results["model"] == "TwoLayer" and result.results["dataset"] == "blobs"
    assert f"\n{tmp_path / 'run'}\n" in out  # the run's last line: the folder, absolute


# The first cell defines the class and the loader as a user would, in the notebook itself (here: this file's own).
NOTEBOOK = [
    "import numpy as np\nimport runner\nfrom torch import nn\n\n\n" + inspect.getsource(TwoLayer) + "\n\n"
    + inspect.getsource(blobs),
    """
    result = runner.train(model=TwoLayer, data=blobs, trainer={"epochs": 2}, plots=False, run_dir="run")
    print(result.run_dir)
    """,
    """
    sweep = runner.sweep("optim=sgd,adam", model=TwoLayer, data=blobs, trainer={"epochs": 2}, sweep_dir="sweep")
    print(sweep.summary[["run", "optim", "model", "dataset"]].to_string(index=False))
    """,
    """
    try:
        runner.train(model=TwoLayer, data=blobs, optim={"lr": -1})
    except runner.RunnerError as error:
        print("caught:", error)
    """,
    """
    runner.train(model=TwoLayer, data=blobs, trainer={"epochs": "many"})
    """,
]


@pytest.mark.slow  # a kernel, torch's import and two runs: about 15 s
def test_a_notebook_trains_your_own_class_and_function_and_shows_no_traceback_or_hydra_line(tmp_path):
    nbformat = pytest.importorskip("nbformat")  # the dev extra's nbconvert brings it, nbclient and ipykernel
    NotebookClient = pytest.importorskip("nbclient").NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip())
                                               for c in NOTEBOOK])
    notebook.cells[-1].metadata["tags"] = ["raises-exception"]  # an uncaught error, as a user would leave it
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell.outputs for cell in notebook.cells]

    def text(cell_outputs):
        return "\n".join(o.get("text", "") + json.dumps(o.get("data", "")) + "".join(o.get("traceback", []))
                         for o in cell_outputs)

    for i, cell_outputs in enumerate(outputs[:-1]):
        assert not [o for o in cell_outputs if o.output_type == "error"], i
        assert "Traceback" not in text(cell_outputs) and "[HYDRA]" not in text(cell_outputs), i
        assert "Warning" not in text(cell_outputs), i  # as rich's "install ipywidgets" for a progress bar
        assert "__main__" not in text(cell_outputs), i
    assert f"{tmp_path / 'run'}\n" in text(outputs[1])  # absolute, as the run's own line prints it
    assert "blobs" in text(outputs[1]) and "TwoLayer (" in text(outputs[1])
    printed = "".join(o.get("text", "") for o in outputs[2] if o.output_type == "stream")
    summary = [line.split() for line in printed.strip().split("\n")[-3:]]
    assert summary[0] == ["run", "optim", "model", "dataset"]
    assert sorted(summary[1:]) == [["0", "sgd", "TwoLayer", "blobs"], ["1", "adam", "TwoLayer", "blobs"]]
    assert "caught: optim.lr=-1.0 is not valid: use a positive learning rate" in text(outputs[3])
    [error] = [o for o in outputs[4] if o.output_type == "error"]
    message = "trainer.epochs: Value 'many' of type 'str' could not be converted to Integer"
    assert error.ename == "RunnerError" and error.evalue == message
    shown = "\n".join(error.traceback)
    assert shown.count("could not be converted") == 1 and "api.py" not in shown  # no frame of runner's
    assert message not in "".join(o.get("text", "") for o in outputs[4])  # not also printed on stderr


@pytest.mark.slow  # three runs of the README's Python block: about 10 s
def test_the_readmes_python_block_prints_every_number_it_shows_at_80_columns(tmp_path):
    import os
    import re
    import subprocess

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- README example: tests/test_notebook.py.*?```python\n(.*?)```", readme, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    printed = [line for line in out.stdout.split("\n") if line and line[0] not in "│├┏┃┡└"]
    assert not [line for line in printed if "..." in line or re.search(r"\[\d+ rows x \d+ columns\]", line)]
    assert max(len(line) for line in printed) <= 80
    table = [line.split() for line in printed if re.match(r"\d+ +test/", line)]
    assert [row[1] for row in table][:2] == ["test/accuracy", "test/balanced_accuracy"]
    assert all(0 <= float(x) <= 1 for row in table for x in row[2:])
