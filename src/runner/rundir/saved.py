"""What runner reads back from the folders it wrote: a resumed run's saved overrides of runner's own keys and a
check that the config is the one it was trained with; a sweep's command line (multirun.yaml). The folder is data:
read as plain YAML, validated, never replayed whole."""

import functools
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from runner.config.schema import Config
from runner.config.sharing import NOT_TRAINING
from runner.errors import RunnerError
from runner.paths import conf_dir
from runner.rundir import folder as rundir


def saved_overrides(run_dir: Path, config_dirs: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """A run folder's .hydra/overrides.yaml as (the overrides of runner's own config keys and groups to resume
    with, the others left out); one line where the folder holds no run or the file is not the plain list of
    strings Hydra writes (a YAML tag such as !!python is refused unread).

    A config group's value is kept only where the command line of this install would name it: an option shipped
    with runner or in a `config_dirs` folder the user gave on this command line, by its plain name; a path
    (`model=../../x/e`, which Hydra would load as that group's YAML, with any `# @package` it declares) never."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir():
        raise RunnerError(f"{run_dir} does not exist; give the directory that `runner train` printed")
    if not path.is_file():
        raise RunnerError(f"{run_dir} is not a run directory (no .hydra/overrides.yaml); give the directory that "
                          "`runner train` printed")
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        what = rundir.reason(exc) if isinstance(exc, OSError) else " ".join(str(exc).split())[:120]
        raise RunnerError(f"cannot read {path} as the list of overrides runner writes ({what}); the run cannot be "
                          "resumed: train it again") from None
    if saved is None:
        saved = []
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise RunnerError(f"{path} is not a list of overrides (strings); the run cannot be resumed: train it again")
    roots = {f.name for f in fields(Config)} | {"experiment", "hparams_search"}
    folders = (conf_dir(), *config_dirs)
    kept, ignored = [], []
    for override in saved:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in ("hydra.run.dir", "trainer.resume"):
            continue  # runner resume sets both
        root = re.split(r"[./]", key, maxsplit=1)[0]
        ours = root in roots and re.fullmatch(r"\w+(\.\w+)*|\w+(/\w+)+", key)
        if ours and ("/" in key or any((Path(f) / key).is_dir() for f in folders)):
            # a config group: its value names the YAML file Hydra loads
            ours = value in ("", "null") or value in group_options(key, folders)
        (kept if ours else ignored).append(override)
    return kept, ignored


def group_options(group: str, folders: tuple[Path, ...]) -> set[str]:
    """The option names of config group `group` (`model`, `hydra/launcher`) in `folders`: their YAML files' stems."""
    return {p.stem for folder in folders for p in (Path(folder) / group).glob("*.yaml")
            if p.is_file() and re.fullmatch(r"[\w-]+", p.stem)}


# Keys a resumed run may change: they change nothing it learns, or where it runs.
RESUMABLE_CHANGES = ("trainer.resume", "trainer.device")


def refuse_changed(run_dir: Path, task: DictConfig) -> None:
    """A resumed run continues the run it was: one line naming the keys whose values differ from the saved
    .hydra/config.yaml (read as data: plain YAML, no tags), unless they change nothing it learns."""
    saved_path = run_dir / ".hydra" / "config.yaml"
    try:
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False)
    except FileNotFoundError:
        return  # not a run folder: claim says so
    except Exception as exc:  # noqa: BLE001 (a run folder is data: anything unreadable is one line)
        raise RunnerError(f"cannot read {saved_path} ({type(exc).__name__}); it is not a config runner wrote, so "
                          "the run cannot be resumed: train it again") from None
    now = OmegaConf.to_container(task, resolve=False)
    allowed = (*NOT_TRAINING, *RESUMABLE_CHANGES)
    changed = [k for k in sorted(set(_flat(saved)) | set(_flat(now)))
               if _flat(saved).get(k) != _flat(now).get(k) and not k.startswith(allowed)]
    if changed:
        shown = ", ".join(f"{k} ({_flat(saved).get(k)!r} -> {_flat(now).get(k)!r})" for k in changed[:4])
        raise RunnerError(f"trainer.resume=true: the run in {run_dir} was trained with other values of {shown}"
                          f"{' and more' if len(changed) > 4 else ''}; resume it as it was (runner resume "
                          f"{run_dir}, with --config-dir X if it was trained with one), or start a new run")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {dotted key: value}."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def own_overrides(job: list[str], sweep: list[str]) -> list[str]:
    """A job's overrides less those that every job of its sweep has (`sweep`: the sweep's command line)."""
    fixed = {k for k, v in (o.split("=", 1) for o in sweep if "=" in o) if not _sweeps(v)}
    return [o for o in job if o.split("=", 1)[0] not in fixed]


def sweep_overrides(sweep_dir: Path) -> list[str] | None:
    """The command-line overrides of the sweep whose multirun.yaml is in `sweep_dir` (None: not a sweep's). Every
    job asks (its TensorBoard name, its line): the file is read once while it stays as it was."""
    path = sweep_dir / "multirun.yaml"
    try:
        stat = path.stat()
    except OSError:
        return None
    found = _read_overrides(str(path), stat.st_mtime_ns, stat.st_size)
    return None if found is None else list(found)


@functools.lru_cache(maxsize=8)
def _read_overrides(path: str, mtime_ns: int, size: int) -> tuple[str, ...] | None:
    try:
        with open(path) as f:
            saved = yaml.safe_load(f)
        return tuple(str(o) for o in saved["hydra"]["overrides"]["task"])
    except Exception:  # noqa: BLE001 (unreadable or not Hydra's: not a sweep's)
        return None


def _sweeps(value: str) -> bool:
    """Whether an override's value is a sweep over several (`a,b`, `range(...)`, `choice(...)`, ...)."""
    return "," in value or "(" in value
