"""Composed configs as runner reads them: the task without Hydra's node, checked; Hydra and OmegaConf errors as one line."""

import copy
import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException, ValidationError

from runner.config.schema import Config

# The environment variable naming the user's --config-dir for runner's search-path plugin (config.search_path).
USER_CONFIG_DIR = "RUNNER_CONFIG_DIR"


def unreadable_override(args: list[str], exc: Exception) -> str:
    """The line for an override Hydra's grammar cannot read (its parser raises plain errors for some: `=3`)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "LexerNoViableAlt" in type(exc).__name__ + first or "token recognition" in first:
        first = "a character Hydra's override grammar does not allow unquoted"
    return (f"cannot read the overrides {' '.join(args)!r}: {first}; quote a value holding spaces or special "
            "characters, e.g. 'dataset.target=\"my column\"' (see runner train --help)")


def task_config(config: DictConfig) -> DictConfig:
    """The composed config without Hydra's own node, as the job will receive it."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


# Launchers and sweepers that come with `pip install 'stackrunner[sweeps]'` (and the presets built on them).
EXTRAS = {"hydra/launcher": ("joblib", "submitit_local", "submitit_slurm", "slurm", "runner_submitit_local",
                            "runner_submitit_slurm"),
          "hydra/sweeper": ("optuna", "runner_optuna")}


def explain(exc: BaseException) -> str:
    """One line naming the bad key or value and what is allowed, from a Hydra/OmegaConf error."""
    inner = [e for e in (exc.__cause__, exc.__context__) if isinstance(e, OmegaConfBaseException)]
    cause = inner[0] if inner and (exc.__cause__ is inner[0] or getattr(inner[0], "full_key", None)) else exc
    in_file = re.match(r"In '([^']+)': ", str(exc))  # a config file's own key, not an override
    if isinstance(exc, OverrideParseException):
        return (f"{str(exc).strip().splitlines()[0]}: Hydra's override grammar cannot read it; quote a value holding "
                "spaces or special characters, e.g. 'dataset.target=\"my column\"' (see runner train --help)")
    if isinstance(exc, MissingConfigException):
        # "Could not find" names the chosen option; "Could not load" names what a chosen preset extends (slurm's
        # submitit_slurm), and its "In '...'" the preset asked for.
        m = re.search(r"Could not find '([^']+)/([^']+)'", str(exc)) if exc.options else None
        base = re.search(r"In '([^']+)/([^']+)': Could not load '([^']+)/([^']+)'", str(exc))
        if base and base.group(4) in EXTRAS.get(base.group(3), ()):
            return _needs_extra(*base.group(1, 2))
        if m:
            group, choice = m.groups()
            if f"runner_{choice}" in exc.options:  # Hydra's name in a config file (the command line's is read as runner's)
                return (f"{group}={choice} is Hydra's name for another plugin; in a config file write runner's own, "
                        f"runner_{choice} (runner train reads {choice} as runner_{choice} on its command line only)")
            if choice in EXTRAS.get(group, ()):
                return _needs_extra(group, choice)
            return f"{group}={choice} is not an option; choose one of: {', '.join(exc.options)}"
    full_key = getattr(cause, "full_key", None)
    # the message as one line: lines it wraps over ("... because it allows\nconfig data ...") joined, up to the
    # first indented one (OmegaConf's "    full_key: ..." details) or a blank line
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    shown = [lines[0]]
    for line in lines[1:]:
        if not line.strip() or line[0].isspace():
            break
        shown.append(line)
    first = " ".join(" ".join(shown).split())
    if isinstance(cause, InterpolationResolutionError) and full_key:
        return f"{full_key}: {first} (an interpolation ${{...}} must name a key of the config)"
    if isinstance(cause, OmegaConfBaseException) and full_key:
        line = f"{full_key}: {first}" if isinstance(cause, ValidationError) else unknown_key(full_key)
        return f"{_config_file(in_file.group(1))}: {line}" if in_file else line
    return first


def _config_file(name: str) -> str:
    """The file Hydra composed as `name` (`trainer/default`): the user's --config-dir copy if there is one."""
    user = Path(os.environ.get(USER_CONFIG_DIR, "")) / f"{name}.yaml"
    return str(user) if os.environ.get(USER_CONFIG_DIR) and user.is_file() else f"{name}.yaml"


def _needs_extra(group: str, choice: str) -> str:
    choice = choice.removeprefix("runner_")  # the name users type (runner train reads it as runner's)
    return (f"{group}={choice} needs the sweeps extra: pip install 'stackrunner[sweeps]' (installs optuna and Hydra's "
            "joblib and submitit plugins)")


def unknown_key(full_key: str) -> str:
    """The line for a key the schema does not have, listing the keys its parent does have."""
    parent = full_key.rpartition(".")[0]
    keys = valid_keys(parent)
    where = f"'{parent}'" if parent else "the top level"
    hint = f"; valid keys in {where}: {', '.join(keys)}" if keys else ""
    return f"unknown key '{full_key}'{hint}"


def unknown_keys(node: Any, schema: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys of a plain nested dict (a composed config) that the schema does not have."""
    known = {f.name: f.type for f in fields(schema)}
    out = []
    for key, value in node.items():
        if key not in known:
            out.append(prefix + str(key))
        elif is_dataclass(known[key]) and isinstance(value, dict):
            out.extend(unknown_keys(value, known[key], f"{prefix}{key}."))
    return out


def valid_keys(path: str) -> list[str]:
    """The keys allowed under a dotted config path (`optim` -> lr, momentum, ...)."""
    node: Any = Config
    for part in [p for p in path.split(".") if p]:
        match = [f for f in fields(node) if f.name == part]
        if not match:
            return []
        node = match[0].type
        if not is_dataclass(node):
            return []
    return [f.name for f in fields(node)]
