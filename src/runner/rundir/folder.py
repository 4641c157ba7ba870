"""A run folder's life: claim it (checked, locked, the old run moved aside), keep status.json true, give it up.

The rules a run folder lives by, each enforced here and nowhere else:
- runner deletes or replaces only a run folder of its own (every file one it writes, at any depth: .layout), never the
  current folder, a parent of it or $HOME, and only once every check has passed (`started`);
- replacing a run is one transaction: `overwrite=true` keeps the old run aside until the new one has finished or
  saved fit state it can resume from (`replaced`); every exit before that puts the old run back (`rollback`);
- one process writes a run folder at a time (an advisory lock the kernel releases when the process dies), and a
  folder is one folder however it is spelled (`outputs/a/../b` is `outputs/b`);
- a sweep's job writes only its own folder, inside the sweep folder and no other job's (`check_job_folders`);
- a folder from elsewhere is data: a symbolic link in it is refused, never written through.
"""

import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from runner.errors import RunnerError, stop_signals_to
from runner.rundir.layout import LOCK, RESULTS, RUN_MARKS, STATUS, WRITES, not_runners  # noqa: F401 (re-exported)

# The process's umask, read once (reading it means setting it, which would race with threads creating files).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass
class _Claim:
    """A run folder this process holds: its lock, whether training has started, and what to put back."""

    fd: int
    before: str  # "absent", "empty" or "run" (resumed): what a rollback puts back
    aside: Path | None = None  # overwrite=true: the old run, until the new one is finished or resumable
    kept: dict[str, bytes] | None = None  # a resumed run's status.json and .hydra/ files as they were
    started: bool = False


_claims: dict[Path, _Claim] = {}


def _key(run_dir: Path) -> Path:
    """A folder as one name however it was spelled: absolute, `..` and `.` taken out, its parent's links resolved
    (the folder itself is not followed: a link there is refused, never written through)."""
    path = Path(os.path.abspath(run_dir))
    return Path(os.path.realpath(path.parent)) / path.name


@contextmanager
def _signals_held():
    """A stop signal arriving while folders move waits until the moves are whole, then stops the run as usual: a
    run is never left half moved (the old run hidden aside, no claim to put it back). Held in Python, not with a
    signal mask, which another thread (torch's, pytest's) would not share."""
    pending: list[int] = []
    try:
        with stop_signals_to(lambda signum, frame: pending.append(signum)):
            yield
    finally:
        if pending:
            signal.raise_signal(pending[0])  # now, to the handler in place again


def claim(run_dir: Path, overwrite: bool, resume: bool = False, key: str = "hydra.run.dir",
          job: list[str] | None = None) -> None:
    """Make `run_dir` this process's, ready for a new run (or, with `resume`, for resuming the unfinished run
    in it), or raise RunnerError; called before anything is written there. `job`: the run's overrides,
    recorded in status.json so that another job never passes for this one."""
    run_dir = _key(run_dir)
    _refuse_special(run_dir, key)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunnerError(f"{key}={run_dir} is a file, not a directory (choose another {key})")
    used = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        _check_resumable(run_dir)
        refuse_links(run_dir)
        _lock(run_dir, "run").kept = {str(p.relative_to(run_dir)): p.read_bytes()
                                      for p in [run_dir / STATUS, *(run_dir / ".hydra").glob("*")] if p.is_file()}
        update_status(run_dir, status="running", pid=os.getpid(), error=None)
        return
    if used and not overwrite:
        raise RunnerError(f"{key}={run_dir} already holds a run; choose another {key}, or add overwrite=true "
                          "to replace it")
    if used:
        _check_replaceable(run_dir, key)
    with _signals_held():
        _claim_new(run_dir, used, key, job)


def _claim_new(run_dir: Path, used: bool, key: str, job: list[str] | None) -> None:
    """claim's moves, whole or not at all: the old run aside (overwrite=true), the new folder locked, status running."""
    aside = None
    if used:
        old = _lock(run_dir, "run")  # no one else is writing the old run
        aside = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
        try:
            os.rename(run_dir, aside)
        except OSError as exc:
            _release(run_dir)
            raise RunnerError(f"cannot move the old run in {run_dir} aside: {reason(exc)}") from None
        _claims.pop(run_dir)
        os.close(old.fd)
    before = "empty" if run_dir.is_dir() else "absent"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _lock(run_dir, before).aside = aside
        write_status(run_dir, "running", job=job)
    except (OSError, RunnerError) as exc:
        if run_dir in _claims:
            rollback(run_dir)
        elif aside is not None:
            if before == "absent":
                shutil.rmtree(run_dir, ignore_errors=True)  # the new folder made above, empty
            os.rename(aside, run_dir)
        if isinstance(exc, RunnerError):
            raise
        raise RunnerError(f"cannot write the run directory {run_dir}: {reason(exc)} (choose a writable {key})") \
            from None


def claim_job(run_dir: Path, job: list[str]) -> None:
    """A sweep job's folder (made by its launcher): locked for this process, refused if another job's run is
    in it (two jobs given one folder by hydra.sweep.subdir), and marked running."""
    run_dir = _key(run_dir)
    other = (read_status(run_dir) or {}).get("job")
    if other is not None and other != job:
        raise RunnerError(f"job {' '.join(job) or '(no overrides)'} was given the folder of job {' '.join(other)} "
                          f"({run_dir}); give each job its own folder with hydra.sweep.subdir (default: "
                          "${hydra.job.num})")
    refuse_links(run_dir)
    if run_dir not in _claims:
        _lock(run_dir, "run").started = True  # a job's folder is never rolled back: a stopped job says so
    write_status(run_dir, "running", job=job)


def started(run_dir: Path) -> None:
    """Every check has passed and training begins: from now a stopped or failed run keeps its own folder, except
    that a run replacing another (overwrite=true) gives it back until `replaced`."""
    held = _claims.get(_key(run_dir))
    if held is not None:
        held.started = True


def replaced(run_dir: Path) -> None:
    """The new run is finished, or has saved fit state it can resume from: the run it replaces is deleted now."""
    held = _claims.get(_key(run_dir))
    if held is None or held.aside is None:
        return
    held.started = True
    with _signals_held():
        shutil.rmtree(held.aside, ignore_errors=True)
        held.aside = None


def replacing(run_dir: Path) -> bool:
    """Whether an earlier run in `run_dir` is still aside (any exit now puts it back)."""
    held = _claims.get(_key(run_dir))
    return held is not None and held.aside is not None


def rollback(run_dir: Path) -> str | None:
    """A run stopped or refused before it has anything of its own to keep: remove what it wrote, put back what
    was there, and say so ("before training started; nothing was written"); None (nothing done) once training
    has started (a replacing run: once `replaced`) or where this process holds no claim."""
    run_dir = _key(run_dir)
    held = _claims.get(run_dir)
    if held is None or (held.started and held.aside is None):
        return None
    with _signals_held():
        _release(run_dir)
        if held.before == "absent":
            shutil.rmtree(run_dir, ignore_errors=True)
        elif held.before == "empty":
            for entry in run_dir.iterdir():
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for name, data in (held.kept or {}).items():
            write_atomic(run_dir / name, data)
        if held.aside is not None:
            os.rename(held.aside, run_dir)
    when = "before training started" if not held.started else "before the new run saved a state to resume from"
    back = (f"the earlier run in {run_dir} is back" if held.aside is not None
            else f"the run in {run_dir} is as it was" if held.before == "run" else "nothing was written")
    return f"{when}; {back}"


def abandon(message: str, status: str = "failed") -> list[str]:
    """On an exit that never reached a run's own handler (a signal or a full disk while Hydra writes `.hydra/`):
    every folder this process still holds is rolled back, or else marked `status` with `message`, and released;
    what became of each, as rollback says it."""
    said = []
    for run_dir in list(_claims):
        back = rollback(run_dir)
        if back is None:
            fail(run_dir, message, status)
            release(run_dir)
        said.append(back or f"the run in {run_dir} is marked {status}")
    return said


def release(run_dir: Path) -> None:
    """The run is over (whatever its status): drop its lock (an earlier run still aside comes back: it was never
    replaced)."""
    run_dir = _key(run_dir)
    if replacing(run_dir):
        rollback(run_dir)
    _release(run_dir)


def holds(run_dir: Path) -> bool:
    """Whether this process holds `run_dir`."""
    return _key(run_dir) in _claims


def _release(run_dir: Path) -> None:
    held = _claims.pop(run_dir, None)
    if held is not None:
        os.close(held.fd)


def _lock(run_dir: Path, before: str) -> _Claim:
    """Take the folder's advisory lock for this process, or one line naming the process that holds it."""
    if run_dir in _claims:
        return _claims[run_dir]
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunnerError(f"{path} is a symbolic link; runner does not write through links in a run folder "
                              "(remove it)") from None
        raise RunnerError(f"cannot write the run directory {run_dir}: {reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunnerError(f"{run_dir} is being written by process {holder}; wait for it to finish (or stop it) "
                          "and try again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    held = _claims[run_dir] = _Claim(fd, before)
    return held


def _refuse_special(run_dir: Path, key: str) -> None:
    """The current folder, a parent of it and $HOME are never run folders."""
    real = run_dir.resolve()
    here = Path.cwd().resolve()
    home = Path.home().resolve()
    if real == here or real in here.parents or real == home or real == Path(real.anchor):
        what = "$HOME" if real == home else "the current folder" if real == here else "a parent of the current folder"
        raise RunnerError(f"{key}={run_dir} is {what}, which is never a run folder; choose a new folder for the run "
                          f"(e.g. {key}=outputs/my_run)")


def _check_replaceable(run_dir: Path, key: str) -> None:
    """overwrite=true replaces a run folder only: every file in it, at any depth, one runner writes (its
    temporary files too); anything else is named and nothing moves."""
    if not any((run_dir / mark).exists() for mark in RUN_MARKS):
        raise RunnerError(f"{key}={run_dir} is a folder with other files, not a run directory; overwrite=true "
                          f"only replaces runs (choose another {key})")
    refuse_links(run_dir)
    foreign = not_runners(run_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunnerError(f"{key}={run_dir} holds files runner did not write ({shown}); overwrite=true replaces "
                          f"only what runner wrote: move them out, or choose another {key}")


def refuse_links(folder: Path) -> None:
    """One line if anything in `folder` is a symbolic link: runner never writes through one. A sweep dir's
    .submitit/ is submitit's (its job folders and its links to their submission scripts), never written by runner."""
    for root, dirs, files in os.walk(folder):
        if Path(root) == Path(folder):
            dirs[:] = [d for d in dirs if d != ".submitit"]
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                raise RunnerError(f"{path} is a symbolic link; a run folder holds only files runner wrote and it "
                                  "never writes through links (remove the link)")


def _check_resumable(run_dir: Path) -> None:
    status = (read_status(run_dir) or {}).get("status")
    if not (run_dir / ".hydra").is_dir():
        raise RunnerError(f"trainer.resume=true: {run_dir} holds no run to resume (no .hydra/); give the directory "
                          "an interrupted `runner train` printed")
    if status == "ok":
        raise RunnerError(f"trainer.resume=true: the run in {run_dir} has finished (status.json: ok); "
                          "there is nothing to resume")


def write_status(run_dir: Path, status: str, error: str | None = None, **fields) -> None:
    """status.json: `running` (since when, in which process), `ok`, `failed` (with the error line) or
    `interrupted` (and when it ended); other fields are kept."""
    now = round(time.time(), 3)
    when = {"started": now, "pid": os.getpid(), "ended": None} if status == "running" else {"ended": now}
    update_status(run_dir, status=status, error=error, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **when, **fields)


def update_status(run_dir: Path, **fields) -> None:
    """Set `fields` in the run's status.json beside what is there already (None removes a key): atomically, or
    on a full disk in place, within the bytes the file system gave the file already (a block, 4 KiB on ext4 and
    XFS: writing there takes none from a full disk)."""
    record = read_status(run_dir) or {}
    record.update(fields)
    data = (json.dumps({k: v for k, v in record.items() if v is not None}, indent=2) + "\n").encode()
    path = Path(run_dir) / STATUS
    try:
        write_atomic(path, data)
    except OSError as exc:
        allocated = path.lstat().st_blocks * 512 if path.is_file() and not path.is_symlink() else 0
        if exc.errno != errno.ENOSPC or allocated < len(data):
            raise
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


def write_atomic(path: Path, data: "bytes | str | Callable[[BinaryIO], object]", durable: bool = False) -> None:
    """Write `path` whole or not at all, the one way runner writes a file: a fresh temporary file beside it (created
    exclusively under a random name, so a link planted there is never followed), renamed over it; the temporary
    file never outlives a failure. `data`: bytes, text (UTF-8), or a function that writes into the open binary
    file it is given (torch.save, DataFrame.to_csv, savefig). The file gets the umask's usual permissions;
    `durable`: fsync before the rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would outlive the rename
            if callable(data):
                data(out)
            else:
                out.write(data.encode() if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(run_dir: Path) -> dict | None:
    """status.json's record, or None where the run wrote none (runs older than status.json)."""
    path = Path(run_dir) / STATUS
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None if not path.exists() else {"status": "failed", "error": "unreadable status.json"}
    return record if isinstance(record, dict) else {"status": "failed", "error": "status.json is not a record"}


def is_finished(run_dir: Path, job: list[str] | None = None) -> bool:
    """Whether `run_dir` holds a finished run (status ok and its results.json), of this `job` where given:
    a resumed sweep skips it."""
    record = read_status(Path(run_dir)) or {}
    same = job is None or record.get("job", job) == job
    return record.get("status") == "ok" and same and (Path(run_dir) / RESULTS).is_file()


def fail(run_dir: Path, message: str, status: str = "failed", **fields) -> None:
    """Record that the run did not finish; a results.json it wrote is withdrawn so it cannot pass for complete.
    `cause="user"` marks a user error (a sweep whose failed jobs are all such exits 2); without it none is kept."""
    try:
        (Path(run_dir) / RESULTS).unlink(missing_ok=True)  # unlinking works even on a full disk
        write_status(run_dir, status, message, **{"cause": None, **fields})
    except OSError:
        pass  # the directory itself is gone or unwritable: the caller still reports the error line


def reason(exc: OSError) -> str:
    """An OSError as a short reason: 'No space left on device', 'Permission denied'."""
    return exc.strerror or str(exc) or type(exc).__name__


def check_job_folders(sweep_dir: Path, folders: dict[int, Path], subdir: str) -> None:
    """A sweep's jobs each write a folder of their own, inside the sweep folder, none inside another's: refused
    (one line naming hydra.sweep.subdir) before any job writes anything."""
    top, seen = _key(sweep_dir), {}
    fix = "give each job its own folder (the default is hydra.sweep.subdir=${hydra.job.num})"
    for num, folder in folders.items():
        folder = _key(folder)
        if top not in folder.parents:
            raise RunnerError(f"hydra.sweep.subdir={subdir} puts job {num} in {folder}, not a folder inside the "
                              f"sweep folder {top}; {fix}")
        other = next((n for f, n in seen.items() if f == folder or f in folder.parents or folder in f.parents), None)
        if other is not None:
            raise RunnerError(f"hydra.sweep.subdir={subdir} gives jobs {other} and {num} one folder ({folder}); {fix}")
        seen[folder] = num
