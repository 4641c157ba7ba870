"""`runner train`: the Hydra application, with Hydra and OmegaConf errors turned into one line."""

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from runner.config import Config, register, valid_keys
from runner.errors import Interrupted, RunnerError
from runner.paths import conf_dir


def train_command(args: list[str]) -> int:
    """Run `runner train [overrides]`; returns the exit status (2 for a user error)."""
    # Let Hydra raise instead of printing its multi-line report, so we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    register()
    sys.argv = ["runner train", *args]
    _job_errors.clear()
    _started[0] = time.time()
    try:
        _hydra_train()
    except Interrupted as exc:
        print(f"{exc}\nresume with: runner resume {exc.path.parent.parent}", file=sys.stderr)
        return exc.status
    except (HydraException, OmegaConfBaseException) as exc:
        return _fail(explain(exc))
    for message in _job_errors:
        _fail(message)
    return 2 if _job_errors else 0


# A job's user error is recorded rather than raised, so a sweep goes on with its other jobs and
# Hydra prints no report of its own; `train_command` prints each one and exits 2.
_job_errors: list[str] = []
_started = [0.0]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _hydra_train(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from runner import timing

    clock = timing.job_clock()
    clock.lap("config")
    from runner.train import train

    clock.lap("imports")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        return train(config, run_dir, clock)
    except (RunnerError, OmegaConfBaseException) as exc:
        _job_errors.append(str(exc) if isinstance(exc, RunnerError) else explain(exc))
        _remove_if_only_hydra_files(run_dir)
    return None


def _remove_if_only_hydra_files(run_dir: Path) -> None:
    # Hydra makes the run directory before the job starts; a job that failed on bad input leaves
    # no trace, but nothing that existed before this command (or that the job wrote) is touched.
    entries = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    if entries <= {".hydra", "train.log"} and all(p.stat().st_mtime >= _started[0] - 1 for p in files):
        shutil.rmtree(run_dir)


def explain(exc: BaseException) -> str:
    """One line naming the bad key or value and what is allowed, from a Hydra/OmegaConf error."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    if isinstance(exc, MissingConfigException) and exc.options:
        m = re.search(r"Could not find '([^']+)/([^']+)'", str(exc))
        if m:
            group, choice = m.groups()
            return f"{group}={choice} is not an option; choose one of: {', '.join(exc.options)}"
    full_key = getattr(cause, "full_key", None)
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if isinstance(cause, OmegaConfBaseException) and full_key:
        if isinstance(cause, ValidationError):
            return f"{full_key}: {first}"
        parent, _, key = full_key.rpartition(".")
        keys = valid_keys(parent)
        where = f"'{parent}'" if parent else "the top level"
        hint = f"; valid keys in {where}: {', '.join(keys)}" if keys else ""
        return f"unknown key '{full_key}'{hint}"
    return first
