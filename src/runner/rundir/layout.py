"""What runner writes in a run folder, at any depth: a folder holding anything else is not runner's to replace."""

import fnmatch
import glob
import re
from pathlib import Path

STATUS = "status.json"
RESULTS = "results.json"
LOCK = ".lock"
# Everything runner writes at the top of a run folder; a folder holding anything else is not ours to replace.
WRITES = frozenset({".hydra", LOCK, STATUS, RESULTS, "report.md", "report.csv", "report.png", "curves.png",
                    "metrics.csv", "predictions.csv", "split_indices.json", "tensorboard", "checkpoints",
                    "ensemble.json", "train.log", "error.log"})
# What runner writes inside its subfolders (fnmatch patterns; a dict is a folder's own table): any other file
# there is the user's, which overwrite=true refuses to delete.
TB_EVENTS = "events.out.tfevents.*"
INSIDE = {".hydra": {"config.yaml": None, "hydra.yaml": None, "overrides.yaml": None},
          "checkpoints": {"*.pt": None},
          "tensorboard": {"*": {TB_EVENTS: None, "member_*": {TB_EVENTS: None}}}}  # member_*: older runs' curves
# What marks a directory as a run's.
RUN_MARKS = (".hydra", STATUS, RESULTS)
# A fit's saved state (for resume) ends so; every other checkpoints/*.pt holds weights to predict with.
FIT_STATE = "_state.pt"


def fit_state(run_dir: Path, name: str) -> Path:
    """Where the fit `name` (a stage, or a sweep's group) of a run keeps its state: checkpoints/<name>_state.pt."""
    return run_dir / "checkpoints" / f"{name}{FIT_STATE}"


def fit_state_part(path: Path, first: int, members: int) -> Path:
    """The state file of the group of `members` members from member `first` on, of the fit whose state file is
    `path` (members trained a group at a time): <name>_m<first>+<members>_state.pt."""
    return path.with_name(f"{path.name.removesuffix(FIT_STATE)}_m{first}+{members}{FIT_STATE}")


def fit_state_parts(path: Path) -> dict[int, int]:
    """The groups whose part files of the fit `path` are there: first member -> members."""
    stem = path.name.removesuffix(FIT_STATE)
    found = {}
    for part in path.parent.glob(f"{glob.escape(stem)}_m*{FIT_STATE}"):
        if (named := re.fullmatch(rf"{re.escape(stem)}_m(\d+)\+(\d+){re.escape(FIT_STATE)}", part.name)):
            found[int(named[1])] = int(named[2])
    return found


def fit_states(run_dir: Path) -> list[Path]:
    """Every fit state a run keeps (a finished run needs none)."""
    return sorted((run_dir / "checkpoints").glob(f"*{FIT_STATE}"))


def is_fit_state(path: Path) -> bool:
    """Whether a file in checkpoints/ is a fit's saved state rather than weights."""
    return path.name.endswith(FIT_STATE)


def not_runners(run_dir: Path) -> list[str]:
    """Every entry of `run_dir`, at any depth, that runner does not write (by path from the folder, a folder with a
    trailing /): a file where the layout names no file, a folder where it names no folder."""
    return _foreign(run_dir, {**dict.fromkeys(WRITES - set(INSIDE)), **INSIDE})


def _foreign(folder: Path, layout: dict, prefix: str = "") -> list[str]:
    """The entries of `folder` that `layout` does not name, by path from the run folder: a file must match a file's
    pattern, a folder a folder's, whose own entries are checked in turn."""
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        inner = next((layout[p] for p in layout if fnmatch.fnmatchcase(name, p)), False)
        if entry.is_file() and (inner is None or _temporary(name, layout)):
            continue
        if isinstance(inner, dict) and entry.is_dir():
            out += _foreign(entry, inner, f"{prefix}{name}/")
            continue
        out.append(prefix + name + ("/" if entry.is_dir() else ""))
    return out


def _temporary(name: str, layout: dict) -> bool:
    """A temporary file of runner's writers (`.NAME.XXXX.tmp`, or `NAME.tmp` of a file runner writes), left by a
    kill mid-write."""
    if name.startswith(".") and ".tmp" in name:
        return True
    stem = name.removesuffix(".tmp")
    return stem != name and any(layout[p] is None and fnmatch.fnmatchcase(stem, p) for p in layout)
