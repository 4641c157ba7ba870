"""What `runner train` makes of its command line before Hydra reads it: runner's own plugin names for Hydra's,
`++` where the user's code takes any keys, and the user's `--config-dir` taken off (runner.config.search_path)."""

from pathlib import Path

from runner.errors import RunnerError
from runner.sweeps.optuna import SAMPLER_GROUP


def read_arguments(args: list[str]) -> tuple[list[str], str | None]:
    """The overrides Hydra is to read, and the user's --config-dir as an absolute path (None: none given); one
    line (RunnerError) for a --config-dir that is not a folder or hydra-optuna-sweeper's sampler group."""
    args = [own_name(into_free_keys(arg)) for arg in args]
    refuse_sampler_group(args)
    return take_config_dir(args)


# Hydra's names that `runner train` reads as runner's plugins of the same kind. Only here, in runner's command: the
# global entries stay Hydra's and its plugins', so every other Hydra app in the environment is untouched.
OWN_NAMES = {"hydra/sweeper": {"optuna": "runner_optuna"},
             "hydra/launcher": {"submitit_local": "runner_submitit_local", "submitit_slurm": "runner_submitit_slurm"}}


def own_name(arg: str) -> str:
    """`hydra/sweeper=optuna` as `hydra/sweeper=runner_optuna` (OWN_NAMES); any other argument as it is."""
    key, eq, choice = arg.partition("=")
    mine = OWN_NAMES.get(key.lstrip("+"), {}).get(choice.strip()) if eq else None
    return f"{key}={mine}" if mine else arg


def refuse_sampler_group(args: list[str]) -> None:
    """hydra-optuna-sweeper's `hydra/sweeper/sampler=NAME` group, which runner's Optuna sweeper has not: one line."""
    for arg in args:
        if arg.partition("=")[0].lstrip("+~").startswith("hydra/sweeper/sampler"):
            raise RunnerError(f"{arg}: {SAMPLER_GROUP}")


# Keyword arguments for the user's own code: any keys, so an override there may add one (Hydra's `++`).
FREE_KEYS = ("model.args", "dataset.args")


def into_free_keys(arg: str) -> str:
    """`model.args.width=64` or `model.args={width: 64}` as the override that may add keys (`++...`)."""
    key = arg.partition("=")[0]
    if "=" in arg and any(key == k or key.startswith(k + ".") for k in FREE_KEYS):
        return "++" + arg
    return arg


def take_config_dir(args: list[str]) -> tuple[list[str], str | None]:
    """`args` without `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`), and DIR as an absolute path.

    runner puts DIR ahead of its shipped configs (runner.config.search_path), so its files override them.
    """
    rest, found = [], None
    words = iter(args)
    for word in words:
        if word in ("--config-dir", "-cd"):
            found = next(words, None)
            if found is None:
                raise RunnerError(f"{word} needs a folder: runner train {word} DIR [overrides]")
        elif word.startswith("--config-dir="):
            found = word.split("=", 1)[1]
        else:
            rest.append(word)
    if found is None:
        return rest, None
    folder = Path(found).expanduser().resolve()
    if not folder.is_dir():
        raise RunnerError(f"--config-dir {found}: no such folder; give the folder that holds your config groups "
                      "(e.g. DIR/model/mine.yaml for model=mine)")
    return rest, str(folder)
