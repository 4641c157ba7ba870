"""`runner train`: the Hydra application, with Hydra and OmegaConf errors turned into one line."""

import os
import re
import sys
from typing import Any

import hydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from runner.config import Config, register, valid_keys
from runner.errors import RunnerError
from runner.paths import conf_dir


def train_command(args: list[str]) -> int:
    """Run `runner train [overrides]`; returns the exit status (2 for a user error)."""
    # Let Hydra raise instead of printing its multi-line report, so we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    register()
    sys.argv = ["runner train", *args]
    try:
        _hydra_train()
    except RunnerError as exc:
        return _fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        return _fail(explain(exc))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _hydra_train(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from runner.train import train

    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    return train(config, HydraConfig.get().runtime.output_dir)


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
