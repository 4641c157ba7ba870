"""The user's own code that a config names (model.target, dataset.loader): found by import path, or among the
objects handed over from Python, and only ever from what the user gave, never from a run folder."""

import importlib
import os
import sys
from typing import Any, Callable

from runner.errors import RunnerError

# Objects handed over from Python (runner.train(model=Net)), by the import path runner records for them.
GIVEN: dict[str, Any] = {}
# The command running now (runner train, runner.train): a user's data function is called once per command, so
# the rows its checks read are the rows that train; the next command calls it again (it may return others).
COMMAND = [0]


def new_command() -> None:
    COMMAND[0] += 1


def path_of(obj: Any) -> str:
    """The import path runner records for a class or function: "package.module:name"."""
    return f"{obj.__module__}:{obj.__qualname__}"


def give(obj: Any) -> str:
    """Make an object passed from Python findable by its path; returns the path for the config."""
    GIVEN[path_of(obj)] = obj
    return path_of(obj)


def load(path: str | None, key: str, fits: Callable[[Any], bool], what: str) -> Any:
    """The object at `path` ("package.module:name" or "package.module.name") for config key `key`; one line
    naming the fix when it does not import or is not `what` (checked by `fits`)."""
    if not path:
        raise RunnerError(f"{key} is not set; give {what} as {key}=package.module:name")
    if path in GIVEN:
        return GIVEN[path]
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise RunnerError(f"{key}={path}: give it as package.module:name")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would: the user's package in the folder they run from
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 (an ImportError, or the user's module failing as it loads)
        raise RunnerError(f"{key}={path}: cannot import {module_name} ({type(exc).__name__}: {exc}); "
                          "install its package or run from the folder that holds it") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not fits(obj):
        found = "nothing" if obj is None else type(obj).__name__
        raise RunnerError(f"{key}={path}: {attr} in {module_name} is {found}, not {what}")
    return obj
