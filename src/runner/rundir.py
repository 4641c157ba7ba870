"""A run directory's life: refuse a used one, claim it before Hydra writes, and keep status.json true."""

import json
import os
import shutil
import time
from pathlib import Path

from runner.errors import RunnerError

STATUS = "status.json"
RESULTS = "results.json"
# What marks a directory as a run's: anything else in a non-empty directory is not ours to delete.
RUN_MARKS = (".hydra", STATUS, RESULTS)


def claim(run_dir: Path, overwrite: bool, resume: bool = False, key: str = "hydra.run.dir") -> None:
    """Make `run_dir` ready for a new run (or, with `resume`, for resuming the unfinished run in it), or raise
    RunnerError; called before anything is written there.

    A used directory is refused unless `overwrite`; then only a run directory (it has .hydra/,
    status.json or results.json) is emptied, never an arbitrary folder.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunnerError(f"{key}={run_dir} is a file, not a directory (choose another {key})")
    if resume:
        _check_resumable(run_dir)
        update_status(run_dir, status="running")
        return
    used = run_dir.is_dir() and any(run_dir.iterdir())
    if used and not overwrite:
        raise RunnerError(f"{key}={run_dir} already holds a run; choose another {key}, or add overwrite=true "
                          "to replace it")
    if used:
        if not any((run_dir / mark).exists() for mark in RUN_MARKS):
            raise RunnerError(f"{key}={run_dir} is a folder with other files, not a run directory; overwrite=true "
                              f"only replaces runs (choose another {key})")
        try:
            shutil.rmtree(run_dir)
        except OSError as exc:
            raise RunnerError(f"cannot remove the old run in {run_dir}: {reason(exc)}") from None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_status(run_dir, "running")
    except OSError as exc:
        raise RunnerError(f"cannot write the run directory {run_dir}: {reason(exc)} (choose a writable {key})") \
            from None


def _check_resumable(run_dir: Path) -> None:
    status = (read_status(run_dir) or {}).get("status")
    if not (run_dir / ".hydra").is_dir():
        raise RunnerError(f"trainer.resume=true: {run_dir} holds no run to resume (no .hydra/); give the directory "
                          "an interrupted `runner train` printed")
    if status == "ok":
        raise RunnerError(f"trainer.resume=true: the run in {run_dir} has finished (status.json: ok); "
                          "there is nothing to resume")


def write_status(run_dir: Path, status: str, error: str | None = None) -> None:
    """status.json: `running` (since when, in which process), `ok`, `failed` (with the error line) or
    `interrupted` (and when it ended); other fields are kept."""
    now = round(time.time(), 3)
    when = {"started": now, "pid": os.getpid(), "ended": None} if status == "running" else {"ended": now}
    update_status(run_dir, status=status, error=error, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **when)


def update_status(run_dir: Path, **fields) -> None:
    """Set `fields` in the run's status.json beside what is there already (None removes a key), atomically."""
    record = read_status(run_dir) or {}
    record.update(fields)
    tmp = Path(run_dir) / (STATUS + ".tmp")
    tmp.write_text(json.dumps({k: v for k, v in record.items() if v is not None}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, Path(run_dir) / STATUS)


def read_status(run_dir: Path) -> dict | None:
    """status.json's record, or None where the run wrote none (runs older than status.json)."""
    try:
        record = json.loads((run_dir / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None if not (run_dir / STATUS).exists() else {"status": "failed", "error": "unreadable status.json"}
    return record if isinstance(record, dict) else None


def is_finished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished run (status ok and its results.json): a resumed sweep skips it."""
    return (read_status(Path(run_dir)) or {}).get("status") == "ok" and (Path(run_dir) / RESULTS).is_file()


def fail(run_dir: Path, message: str, status: str = "failed") -> None:
    """Record that the run did not finish; a results.json it wrote is withdrawn so it cannot pass for complete."""
    try:
        (run_dir / RESULTS).unlink(missing_ok=True)  # unlinking works even on a full disk
        write_status(run_dir, status, message)
    except OSError:
        pass  # the directory itself is gone or unwritable: the caller still reports the error line


def reason(exc: OSError) -> str:
    """An OSError as a short reason: 'No space left on device', 'Permission denied'."""
    return exc.strerror or str(exc) or type(exc).__name__
