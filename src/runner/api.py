"""runner from Python: `train` and `sweep` run what `runner train` runs, in this process, and return the results.

    import runner
    result = runner.train("model=mlp", optim="adamw", trainer={"epochs": 50, "seeds": 3})
    result.table              # the headline: metric, mean, 95% interval, what it is over
    result.predict(frame)     # every member's predictions for new rows, and their mean

A model class may be passed as itself (`model=Net`, any torch.nn.Module class): it trains as `model=module`.
A user error raises RunnerError with the one line the shell would print, in the call's terms (`model=Net`), from
the call itself (pytest hides that frame too: `__tracebackhide__`); in IPython and Jupyter an uncaught one shows
as that line alone.
"""

import json
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import rundir, user_code
from runner.errors import RunnerError
from runner.rundir.spreadsheet import read_frame
from runner.user_code import path_of


@dataclass
class Result:
    """A finished run: its folder and results.json, with the views a notebook wants."""

    run_dir: Path
    results: dict  # results.json
    model_target: str | None = None  # model=module: the class it was trained with, for predict

    @property
    def table(self):
        """The test metrics as a DataFrame: metric, mean, ci95_lo, ci95_hi, interval (its method), over."""
        import pandas as pd

        rows = [{"metric": name, "mean": m.get("mean"), "ci95_lo": (m.get("ci95") or [None, None])[0],
                 "ci95_hi": (m.get("ci95") or [None, None])[1], "interval": m.get("interval"),
                 "over": self.results.get("over")} for name, m in self.results["metrics"].items()]
        return pd.DataFrame(rows)

    @property
    def predictions(self):
        """predictions.csv: every tested member's predictions of its test rows (labels as they were, without the
        quote that keeps a spreadsheet from running them as formulas)."""
        import pandas as pd

        return read_frame(pd.read_csv(self.run_dir / "predictions.csv"))

    def predict(self, data, checkpoint: str = "best"):
        """Every member's predictions for new rows: a CSV path, a DataFrame with the training columns, or the rows
        themselves (an ndarray or a list of rows) of a run whose features are all numbers, in the file's order."""
        import numpy as np
        import pandas as pd

        from runner.commands.predict import load_checkpoint, predict

        target = self.model_target
        if isinstance(data, (str, Path)):
            return predict(self.run_dir, Path(data), checkpoint, target, python=True)
        if isinstance(data, (np.ndarray, list, tuple)):
            state = load_checkpoint(self.run_dir, checkpoint)
            columns = list(state["numeric"])
            rows = np.asarray(data, dtype=object)
            if state["categorical"]:
                raise RunnerError(f"Result.predict: this run trained on text columns ({', '.join(state['categorical'])})"
                                  "; give a DataFrame with the columns by name, not bare rows")
            if rows.ndim != 2 or rows.shape[1] != len(columns):
                raise RunnerError(f"Result.predict: the rows have shape {list(rows.shape)}; give [n, {len(columns)}] "
                                  f"rows of the run's features {', '.join(columns)} in that order (or a DataFrame)")
            data = pd.DataFrame(rows, columns=columns)
        if not isinstance(data, pd.DataFrame):
            raise RunnerError(f"Result.predict takes a DataFrame, an ndarray or list of rows, or a CSV path, not "
                              f"{type(data).__name__}")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "rows.csv"
            data.to_csv(path, index=False)
            return predict(self.run_dir, path, checkpoint, target, python=True)


@dataclass
class SweepResult:
    """A finished sweep: its folder, each job's Result, and the summary table (summary.csv)."""

    sweep_dir: Path
    runs: list[Result]

    @property
    def summary(self):
        import pandas as pd

        return read_frame(pd.read_csv(self.sweep_dir / "summary.csv"))


def train(*overrides: str, run_dir: str | Path | None = None, model: Any = None, data: Any = None,
          **keywords: Any) -> Result:
    """Train one experiment: `overrides` as on the shell ("optim=adamw"), keywords as groups or values
    (optim="adamw", trainer={"epochs": 50}); `model` a config name or an nn.Module class; `data` a dataset name or
    a function returning (X, y) or a DataFrame (dataset=python). Returns its Result."""
    __tracebackhide__ = True
    _one_line_in_ipython()
    try:
        args, run_dir = _own_folder(_arguments(overrides, model, keywords, data), "hydra.run.dir", run_dir, "run_dir",
                                    "outputs/python")
        _call([*args, f"hydra.run.dir={_quoted(str(run_dir))}"], model, data)
        return _result(run_dir, _target(model, overrides))
    except RunnerError as exc:
        raise exc.with_traceback(None) from None  # the caller's line, not runner's frames


def sweep(*overrides: str, sweep_dir: str | Path | None = None, model: Any = None, data: Any = None,
          **keywords: Any) -> SweepResult:
    """A sweep (`runner train -m`): "optim=sgd,adam" sweeps; returns each job's Result and the summary."""
    __tracebackhide__ = True
    _one_line_in_ipython()
    try:
        args, sweep_dir = _own_folder(_arguments(overrides, model, keywords, data), "hydra.sweep.dir", sweep_dir,
                                      "sweep_dir", "outputs/python-multirun")
        _call(["-m", *args, f"hydra.sweep.dir={_quoted(str(sweep_dir))}"], model, data)
        jobs = sorted((p.parent for p in sweep_dir.glob("*/results.json")), key=lambda p: int(p.name)
                      if p.name.isdigit() else 0)
        return SweepResult(sweep_dir, [_result(job, _target(model, overrides)) for job in jobs])
    except RunnerError as exc:
        raise exc.with_traceback(None) from None


def _one_line_in_ipython() -> None:
    """In IPython (Jupyter's kernel), show an uncaught RunnerError as its one line, as the shell would: its frames
    are runner's, not the notebook's. A handler of the user's own is left in place."""
    import sys

    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    if shell is not None and not shell.custom_exceptions:
        shell.set_custom_exc((RunnerError,), _show_one_line)


def _show_one_line(shell, etype, value, tb, tb_offset=None) -> None:
    shell.showtraceback((etype, value, tb), exception_only=True)


def _own_folder(args: list[str], key: str, given: str | Path | None, keyword: str, default: str
                ) -> tuple[list[str], Path]:
    """`args` without the caller's own `key=DIR` override (hydra={"run": {"dir": DIR}}, "hydra.run.dir=DIR"), and
    the folder, absolute: DIR, or `given` (run_dir=), or a fresh one under `default`; one line if DIR and `given`
    name different folders."""
    named = [_unquoted(a.partition("=")[2]) for a in args if a.partition("=")[0].lstrip("+") == key]
    rest = [a for a in args if a.partition("=")[0].lstrip("+") != key]
    if not named:
        return args, (Path(given) if given is not None else _fresh(default)).absolute()
    folder = Path(named[-1])
    if given is not None and Path(given).absolute() != folder.absolute():
        raise RunnerError(f"{key}={folder} and {keyword}={given} name two folders; give the folder once "
                          f"({keyword}=...)")
    return rest, folder.absolute()


def _unquoted(text: str) -> str:
    """An override's value as _quoted wrote it (or the caller did), without the quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].replace("\\'", "'").replace("\\\\", "\\")
    return text


def _target(model: Any, overrides) -> str | None:
    """The class a model=module run was asked to train, as the caller named it."""
    if isinstance(model, type):
        return path_of(model)
    named = [o.partition("=")[2] for o in overrides if str(o).partition("=")[0] == "model.target"]
    return named[-1] if named else None


def _arguments(overrides, model, keywords, data=None) -> list[str]:
    args = [str(o) for o in overrides]
    if isinstance(model, type):
        from runner.models.module import give

        args += ["model=module", f"model.target={give(model)}"]
    elif model is not None:
        args.append(f"model={model}")
    if callable(data):
        args += ["dataset=python", f"dataset.loader={user_code.give(data)}"]
    elif data is not None:
        args.append(f"dataset={data}")
    for key, value in keywords.items():
        args += _flat(key, value)
    return args


def _flat(key: str, value: Any) -> list[str]:
    """A keyword as overrides: a dict is a group's values (trainer={"epochs": 5} -> trainer.epochs=5), except
    model.args and dataset.args, the user's own keyword arguments, each one value."""
    if isinstance(value, dict) and key not in ("model.args", "dataset.args"):
        return [o for k, v in value.items() for o in _flat(f"{key}.{k}", v)]
    return [f"{key}={_value(value)}"]


def _value(value: Any) -> str:
    """A Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    return _quoted(str(value))


def _quoted(text: str) -> str:
    if re.fullmatch(r"[\w./:@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _call(args: list[str], model: Any, data: Any) -> None:
    """Run `runner train args` (Hydra's own log lines, as "Launching 2 jobs", left out); its first error, in the
    call's terms, raised."""
    from runner.commands import train as command

    state = random.getstate()  # the caller's: a library imported on first use may draw from it (rich's style ids)
    try:
        status, errors = command.run([*args, "hydra.hydra_logging.root.level=WARNING"])
    finally:
        random.setstate(state)
    if status != 0:
        raise RunnerError(_in_python_terms(errors[0], model, data) if errors else
                          f"runner train exited with status {status}")


def _in_python_terms(message: str, model: Any, data: Any) -> str:
    """An error's line with the config keys of objects given from Python as the call named them:
    `model.target=__main__:Net` as `model=Net`, `dataset.loader=__main__:load` as `data=load`."""
    for key, obj, word in (("model.target", model, "model"), ("dataset.loader", data, "data")):
        if isinstance(obj, type) or (key == "dataset.loader" and callable(obj)):
            path = path_of(obj)
            for written in (path, path.replace(":", "\\:")):
                message = message.replace(f"model=module {key}={written}", f"{word}={obj.__qualname__}")
                message = message.replace(f"{key}={written}", f"{word}={obj.__qualname__}")
    return message


def load(run_dir: str | Path, model: Any = None) -> Result:
    """A finished run from its folder. A run of your own model class needs that class (or its import path)
    as `model` to predict: runner imports no code that a folder names."""
    __tracebackhide__ = True
    _one_line_in_ipython()

    run_dir = Path(run_dir).absolute()
    if not (run_dir / rundir.RESULTS).is_file() or (rundir.read_status(run_dir) or {}).get("status", "ok") != "ok":
        raise RunnerError(f"{run_dir} holds no finished run (no results.json with status ok)")
    if isinstance(model, type):
        from runner.models.module import give

        model = give(model)
    return _result(run_dir, model)


def _result(run_dir: Path, model_target: str | None = None) -> Result:
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"{run_dir / 'results.json'}: cannot read it ({exc})") from None
    return Result(run_dir, results, model_target)


def _fresh(parent: str) -> Path:
    """A new folder name under `parent`, by time, never one that exists."""
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    path, n = Path(parent) / stamp, 1
    while path.exists():
        path, n = Path(parent) / f"{stamp}-{n}", n + 1
    return path
