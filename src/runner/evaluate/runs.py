"""Finding and reading finished runs for `runner report`: run dirs, their settings and their data."""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runner import rundir
from runner.errors import RunnerError


@dataclass
class Run:
    """One finished run: its directory, results.json, task overrides and the config it resolved to."""

    path: Path
    results: dict
    overrides: dict[str, str]  # key -> value as written on the command line ("optim" -> "sgd")
    config: dict  # .hydra/config.yaml
    choices: dict  # .hydra/hydra.yaml: hydra.runtime.choices (group -> option)


def find_runs(paths) -> tuple[list[Path], list[Path]]:
    """(finished runs, runs that started but did not finish) under `paths`: run dirs, multiruns or any folder.
    A run is finished when it has results.json and its status.json (if it wrote one) says ok."""
    runs, incomplete = [], []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise RunnerError(f"{given}: no such file or directory")
        if path.is_file():
            if path.name != "results.json":
                raise RunnerError(f"{given}: not a run directory, a multirun directory or a results.json")
            runs.append(path.parent)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            here = Path(dirpath)
            status = (rundir.read_status(here) or {}).get("status", "ok")
            if "results.json" in filenames and status == "ok":
                runs.append(here)
                dirnames.clear()  # a run's own subfolders (checkpoints/, tensorboard/) hold no runs
            elif ".hydra" in dirnames or "status.json" in filenames:
                incomplete.append(here)  # the run started (Hydra wrote its config) but did not finish
                dirnames.clear()
            dirnames[:] = sorted((d for d in dirnames if d != ".hydra"), key=_natural)
    runs = list(dict.fromkeys(p.resolve() for p in runs))
    incomplete = list(dict.fromkeys(p.resolve() for p in incomplete))
    if not runs:
        where = ", ".join(str(p) for p in paths)
        if incomplete:
            record = rundir.read_status(incomplete[0]) or {}
            why = f" ({record.get('status')}: {record['error']})" if record.get("error") else ""
            raise RunnerError(f"no finished run under {where}: {len(incomplete)} failed or unfinished, e.g. "
                              f"{incomplete[0]}{why}")
        raise RunnerError(f"no results.json found under {where}; give run directories or a multirun directory")
    return runs, incomplete


def _natural(name: str):
    # Job folders are 0, 1, ..., 10: numeric order, not 0, 1, 10, 2.
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def load_run(path: Path) -> Run:
    """Read a run directory: results.json and, where Hydra wrote them, its overrides and config."""
    try:
        results = json.loads((path / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"{path / 'results.json'}: cannot read it ({exc})") from None
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict) or not results["metrics"]:
        raise RunnerError(f"{path / 'results.json'}: no 'metrics' section; is it a runner results.json?")
    wrong = _misshapen(results)
    if wrong:
        raise RunnerError(f"{path / 'results.json'}: {wrong} is not what runner writes; train the run again or "
                          "leave it out")
    hydra_dir = path / ".hydra"
    overrides = {}
    for text in _yaml(hydra_dir / "overrides.yaml") or []:
        key, sep, value = str(text).partition("=")
        if sep and not key.startswith("~"):
            overrides[key.lstrip("+")] = value
    overrides = _own_code(overrides)
    hydra = _yaml(hydra_dir / "hydra.yaml") or {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    return Run(path, results, overrides, _yaml(hydra_dir / "config.yaml") or {}, choices)


def _own_code(overrides: dict[str, str]) -> dict[str, str]:
    """A run of the user's own code by its name: model=module with model.target=pkg.mod:Net as model=Net, and
    dataset=python with dataset.loader=pkg.mod:load as dataset=load (Hydra's escaped `\\:` read as `:`)."""
    out = dict(overrides)
    for group, choice, key in (("model", "module", "model.target"), ("dataset", "python", "dataset.loader")):
        if out.get(group) == choice and key in out:
            out[group] = re.split(r"[:.]", out.pop(key).replace("\\:", ":"))[-1]
    return out


_NUMBER = (int, float, type(None))
_TEXT = (str, type(None))


def _misshapen(results: dict) -> str | None:
    """The first field `runner report` reads whose type is not the one runner writes, or None."""
    for key in ("task", "dataset", "model", "over", "plan"):
        if not isinstance(results.get(key), _TEXT):
            return f"'{key}'"
    sections = {"metrics": results["metrics"], "validation": results.get("validation") or {}}
    baselines = results.get("baselines") or {}
    if not isinstance(baselines, dict):
        return "'baselines'"
    sections.update({f"baselines.{name}": table for name, table in baselines.items()})
    for where, table in sections.items():
        if not isinstance(table, dict):
            return f"'{where}'"
        for metric, entry in table.items():
            if not isinstance(entry, dict):
                return f"'{where}.{metric}'"
            for field in ("mean", "sd", "se", "n"):
                if isinstance(entry.get(field), bool) or not isinstance(entry.get(field), _NUMBER):
                    return f"'{where}.{metric}.{field}'"
            for field in ("ci95", "ci95_t"):
                ci = entry.get(field)
                if ci is not None and not (isinstance(ci, list) and len(ci) == 2
                                           and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ci)):
                    return f"'{where}.{metric}.{field}'"
            if not isinstance(entry.get("interval"), _TEXT):
                return f"'{where}.{metric}.interval'"
    for key in ("selection", "epochs", "timing", "averaging", "ensembles", "confusion"):
        if not isinstance(results.get(key), (dict, type(None))):
            return f"'{key}'"
    return None


def _yaml(path: Path):
    if not path.is_file():
        return None
    try:
        # libyaml's loader where installed: Hydra's hydra.yaml is long, and pure-Python parsing of
        # six of them was a fifth of `runner report` on a sweep.
        return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        raise RunnerError(f"{path}: cannot read it ({exc})") from None


def setting_of(run: Run, key: str) -> str:
    """The value `key` had in `run`: its override, else the group's choice or the config's value."""
    if key in run.overrides:
        return _canonical(_parse(run.overrides[key]))
    if key in run.choices:
        return _canonical(run.choices[key])
    node: Any = run.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return "?"
        node = node[part]
    if isinstance(node, dict) and "name" in node:
        return _canonical(node["name"])  # a config group without recorded choices: its name field
    return _canonical(node)


def _parse(text: str):
    """An override's value as the config would hold it ("1e-3" -> 0.001, "[32,32]" -> [32, 32])."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 as a string; Hydra reads it as a float
        except ValueError:
            pass
    return value


def _canonical(value) -> str:
    """One spelling per value, so "0.10", "0.1" and a config's 0.1 compare equal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        x = float(value)
        return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)  # 1 and 1.0 are one value
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


DATA_FIELDS = ("dataset", "target", "task", "split")


def data_of(run: Run) -> dict:
    """What a run was made on: dataset, target, task and test split (None where an older run did not record one)."""
    target = run.results.get("target") or (run.config.get("dataset") or {}).get("target")
    return {"dataset": run.results.get("dataset"), "target": target, "task": run.results.get("task"),
            "split": split_of(run.config.get("eval"))}


def split_of(ev) -> str | None:
    """The test rows' plan from a run's eval config ("5-fold, split seed 0"): runs scored on other test rows
    do not rank together."""
    if not isinstance(ev, dict) or not ev.get("name"):
        return None
    name, seed = ev["name"], f"split seed {ev.get('split_seed', 0)}"
    if name == "kfold":
        repeats = int(ev.get("repeats") or 1)
        return f"{'%dx ' % repeats if repeats > 1 else ''}{ev.get('k')}-fold, {seed}"
    if name == "holdout":
        return f"holdout (test {ev.get('test_fraction')}), {seed}"
    return str(name)


def data_groups(runs: list[Run]) -> list[tuple[dict, list[Run]]]:
    """The runs split by the data they were made on, in the order found; a run that does not record a
    field joins the first group it does not contradict."""
    groups: list[tuple[dict, list[Run]]] = []
    for run in runs:
        data = data_of(run)
        for known, members in groups:
            if all(data[k] is None or known[k] is None or str(data[k]) == str(known[k]) for k in DATA_FIELDS):
                members.append(run)
                known.update({k: v for k, v in data.items() if v is not None and known[k] is None})
                break
        else:
            groups.append((dict(data), [run]))
    return groups


def describe_data(data: dict, fields=DATA_FIELDS) -> str:
    """`dataset heart, target num, binary, 5-fold, split seed 0` (only `fields`, and the dataset; unknown parts left
    out)."""
    data = {k: v if k == "dataset" or k in fields else None for k, v in data.items()}
    parts = [f"dataset {data['dataset']}" if data["dataset"] else "", f"target {data['target']}" if data["target"]
             else "", str(data["task"] or ""), str(data.get("split") or "")]
    return ", ".join(p for p in parts if p)


def check_same_data(runs: list[Run]) -> None:
    """Refuse to rank runs made on different datasets, targets or tasks together: their scores do not compare."""
    groups = data_groups(runs)
    if len(groups) > 1:
        parts = "; ".join(f"{describe_data(data)} ({len(members)} run{'s' * (len(members) > 1)}, e.g. "
                          f"{members[0].path})" for data, members in groups)
        raise RunnerError(f"these runs are on different data or test splits and cannot be ranked together: {parts}; "
                          "report each group's runs separately")
