"""`runner train`: the Hydra application; checks a run before anything is written, keeps status.json true."""

import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import hydra
import yaml
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import rundir, user_code
from runner.commands.arguments import read_arguments
from runner.commands.listing import (
    LISTING_FLAGS,
    complete_as_runner,
    one_config_repository,
)
from runner.config.compose import (
    USER_CONFIG_DIR,
    checked_config,
    explain,
    task_config,
    unreadable_override,
)
from runner.config.schema import Config, register
from runner.errors import Interrupted, RunnerError, Stopped
from runner.paths import conf_dir
from runner.rundir.saved import refuse_changed
from runner.sweeps.search import objective
from runner.sweeps.summary import sweep_overrides


def train_command(args: list[str]) -> int:
    """Run `runner train [overrides]`, each error a line on stderr; returns the exit status (2 for a user error,
    1 for a crashed sweep job, 128 + the signal for a run stopped by one)."""
    status, errors = run(args)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return status


def run(args: list[str]) -> tuple[int, list[str]]:
    """`runner train [overrides]` as runner.train calls it: the exit status and the one-line errors, unprinted."""
    status = _train(args)
    return status, list(FAILURES)


def _train(args: list[str]) -> int:
    """The command: its exit status; each user error's line goes to FAILURES."""
    # Let Hydra raise instead of printing its multi-line report, so we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from runner.sweeps.summary import CRASHED, FAILED

    register()
    user_code.new_command()
    FAILURES.clear()
    FAILED.clear()  # a previous sweep's in this process (runner.sweep, tests): not this command's
    CRASHED.clear()
    try:
        args, config_dir = read_arguments(args)
    except RunnerError as exc:
        return _fail(str(exc))
    sys.argv = ["runner train", *args]
    if any(arg in ("-sc", "--shell-completion") for arg in args):
        complete_as_runner()
    _job_errors.clear()
    _job_crashes.clear()
    _job_started[:] = [False]
    _interrupted.clear()
    _rolled_back.clear()
    _sweep_config.clear()
    version_base = _hydra_version_base()
    _hydra_version_base((HYDRA_VERSION_BASE,))
    try:
        _guard_signals(None)  # SIGTERM while Hydra composes and checks: one true line, not a silent 143
        if config_dir:
            os.environ[USER_CONFIG_DIR] = config_dir
        with one_config_repository(listing=any(arg in LISTING_FLAGS for arg in args)):
            _hydra_train()
    except (Interrupted, KeyboardInterrupt) as stop:  # a signal that no run's own handler took
        exc = Interrupted.of(stop)
        _rolled_back[:] = rundir.abandon(str(exc), "interrupted")[:1]
        if not _sweep_config:  # a single run stopped before its own handler: there is nothing to resume
            exc.run_dir = None
        _interrupted.append(exc)
    except Refused as refused:
        return _fail(str(refused))
    except RunnerError as exc:  # from a sweeper (its settings, its search space); a job records its own
        return _fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        return _fail(explain(exc))
    except yaml.YAMLError as exc:  # a config file of the user's (--config-dir) that is not YAML
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
        return _fail(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}); fix the file")
    except Exception as exc:
        if _job_started[0]:
            raise  # a bug in the run
        if isinstance(exc, OSError):
            if isinstance(exc, BrokenPipeError):
                raise  # a closed pipe (`runner train --help | head`): not an override's fault
            return _fail(f"cannot write {exc.filename or 'the run directory'}: {rundir.reason(exc)}")
        return _fail(unreadable_override(args, exc))
    finally:
        os.environ.pop(USER_CONFIG_DIR, None)
        # A folder still held here was left by an exit past its run's handler (Hydra failing to write .hydra/ on
        # a full disk, a crash): put back what was there, or say in its status.json that it stopped.
        rundir.abandon(FAILURES[-1] if FAILURES else "stopped before the run could record why")
        _hydra_version_base(version_base)
        _restore_signals()
    if _interrupted:
        return _report_interrupted(_interrupted[0])
    for message in _job_errors:
        _fail(message)
    if FAILED and not _job_errors:  # jobs that ran in other processes (joblib, submitit): read from their dirs
        for line in FAILED:
            _fail(line)
        return 1 if CRASHED else 2
    return 1 if _job_crashes else 2 if _job_errors else 0


def _hydra_version_base(restore: Any = False) -> Any:
    """Hydra's process-wide version base (a singleton's value, which runner's @hydra.main sets to 1.3), or put
    `restore` back: runner.train in a process leaves other Hydra apps there the defaults they had."""
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    if restore is False:
        held = Singleton._instances.get(VersionBase)
        return None if held is None else (held.version_base,)
    if restore is None:
        Singleton._instances.pop(VersionBase, None)
    else:
        from packaging.version import Version

        value = restore[0]
        VersionBase.instance().version_base = Version(value) if isinstance(value, str) else value
    return restore


def _report_interrupted(exc: Interrupted) -> int:
    """A run or a sweep stopped by a signal: what was kept, and the command that continues it."""
    if _sweep_config:  # a sweep: its summary still lists every job, with its status
        from runner.sweeps.summary import SweepReport

        try:
            SweepReport().on_multirun_end(_sweep_config[0])
        except Exception:  # noqa: BLE001 (the summary is a courtesy here; the status files are the record)
            pass
        print(f"{exc}\nresume with the same command: runner train {' '.join(sys.argv[1:])}", file=sys.stderr)
        return exc.status
    if exc.run_dir is None:  # before the run had anything to keep: what was there is back
        print(f"{exc} {_rolled_back[0] if _rolled_back else 'before training started; nothing was written'}",
              file=sys.stderr)
        return exc.status
    print(f"{exc}\nresume with: runner resume {exc.run_dir}", file=sys.stderr)
    return exc.status


def _guard_signals(run_dir: Path | None) -> None:
    """From the start of the command: SIGTERM and SIGUSR2 stop it through Interrupted (carried as Stopped), so
    whatever folder the run holds is put back or says interrupted, wherever it was (training installs its own
    handler, which saves the fit state first). Ctrl-C is Python's KeyboardInterrupt, handled the same way."""
    from runner.errors import STOP_SIGNALS  # not engine's module: `runner train --help` never imports torch

    def stop(signum, frame):
        raise Stopped(Interrupted(signum, run_dir))  # past Hydra's and any library's `except Exception`

    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT:
            try:
                _previous_signals.setdefault(signum, signal.signal(signum, stop))
            except ValueError:  # not the main thread
                pass


def _restore_signals() -> None:
    for signum, handler in _previous_signals.items():
        signal.signal(signum, handler)
    _previous_signals.clear()


_previous_signals: dict[int, Any] = {}
_sweep_config: list[DictConfig] = []  # the multirun's config, for its summary when a signal stops it


# A job's user error is recorded rather than raised, so a sweep goes on with its other jobs and
# Hydra prints no report of its own; `train_command` prints each one and exits 2.
_job_errors: list[str] = []
_job_crashes: list[str] = []
_job_started = [False]
# A single run stopped by a signal: handed to train_command past Hydra, which would print its own
# "Error executing job" line before runner's resume message; and what its folder's rollback said.
_interrupted: list[Interrupted] = []
_rolled_back: list[str] = []


# The lines this command printed as errors, for callers in Python (runner.api) to raise.
FAILURES: list[str] = []


def _fail(message: str) -> int:
    FAILURES.append(message)
    return 2


class Refused(BaseException):
    """A run refused before Hydra wrote anything. A BaseException because Hydra turns an Exception
    raised in a callback into a warning and goes on to run the job."""


class CheckRun(Callback):
    """Before Hydra makes the run directory: check the config and the data, then claim the directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a bad config, bad data or a used run directory before `.hydra/` is written."""
        from runner.rundir import timing

        try:
            task = task_config(config)
            checked = checked_config(task, timing.waiting())  # reading the data is data_s, not config_s
            run_dir = Path(config.hydra.run.dir).absolute()
            if checked.trainer.resume:
                refuse_changed(run_dir, task)
            _guard_signals(run_dir)  # a signal from the claim on puts back what the claim moved (abandon)
            rundir.claim(run_dir, checked.overwrite, checked.trainer.resume,
                         job=list(OmegaConf.to_container(config.hydra.overrides.task)))
        except RunnerError as exc:
            raise Refused(str(exc)) from None
        except OmegaConfBaseException as exc:
            raise Refused(explain(exc)) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a used sweep directory, unless it holds an Optuna study to continue; each job's config is
        checked in its own directory."""
        from runner.sweeps.search import STUDY_FILE

        _sweep_config[:] = [config]
        sweep_dir = Path(config.hydra.sweep.dir)
        subdir = config.hydra.sweep._get_node("subdir")._value()
        if "${" not in str(subdir):
            raise Refused(f"hydra.sweep.subdir={subdir} gives every job the same folder; give each its own "
                          "(the default is ${hydra.job.num})")
        try:
            if sweep_dir.is_dir():
                rundir.refuse_links(sweep_dir)
        except RunnerError as exc:
            raise Refused(str(exc)) from None
        _guard_signals(None)
        if (sweep_dir / STUDY_FILE).is_file():
            return
        if not sweep_dir.exists() or (sweep_dir.is_dir() and not any(sweep_dir.iterdir())):
            return
        before = sweep_overrides(sweep_dir)
        now = list(OmegaConf.to_container(config.hydra.overrides.task))
        if before is None:
            raise Refused(f"hydra.sweep.dir={sweep_dir} is already used; choose another hydra.sweep.dir")
        if [o for o in before if not o.startswith("hydra.")] != [o for o in now if not o.startswith("hydra.")]:
            raise Refused(f"hydra.sweep.dir={sweep_dir} holds another sweep ({' '.join(before)}); rerun that "
                          "command to finish it, or choose another hydra.sweep.dir")
        # The same sweep again: its finished jobs are kept, the others run (job dirs are sweep dir + job number).


def _share_cores(config: Config) -> None:
    """Under the joblib launcher, n_jobs jobs run at once: each gets cores // n_jobs torch threads (at least 1),
    unless trainer.threads says otherwise, so jobs x threads never exceeds the cores; and no progress bar (the
    jobs' bars would interleave, and redrawn from worker processes they cost a 12-job sweep minutes)."""
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return
    config.trainer.progress = False
    if config.trainer.threads is not None:
        return
    cores = os.cpu_count() or 1
    jobs = launcher.get("n_jobs") or -1
    jobs = cores + 1 + jobs if jobs < 0 else jobs  # joblib's convention: -1 is every core, -2 all but one
    config.trainer.threads = max(1, cores // max(jobs, 1))


HYDRA_VERSION_BASE = "1.3"
_version_base_before = _hydra_version_base()


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=HYDRA_VERSION_BASE)
def _hydra_train(cfg: DictConfig) -> Any:
    return run_task(cfg)


# Hydra's decorator sets the process-wide version base as this module is imported; train_command sets it for the
# command's run only, so another Hydra app in the same process keeps its own defaults.
_hydra_version_base(_version_base_before)


def run_task(cfg: DictConfig, work: Callable | None = None) -> Any:
    """One job in its run directory (Hydra's runtime.output_dir): check its config, run `work(config, run_dir,
    clock)` (default: train it alone) and keep status.json true; returns objective(results), None if it failed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from runner.console import console

    _job_started[0] = True
    run_dir = Path(HydraConfig.get().runtime.output_dir).absolute()
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    job = list(OmegaConf.to_container(HydraConfig.get().overrides.task))
    before = sweeping and rundir.is_finished(run_dir, job)
    try:
        # A sweep's job: its lines go to its train.log, one line here; a finished one's log stays as it was.
        with console.job(quiet=sweeping, logged=not before):
            return _run_job(cfg, work, run_dir, sweeping, job)
    finally:
        rundir.release(run_dir)
        if sweeping:
            from runner.sweeps.summary import job_line

            console.print(job_line(run_dir, sweep_overrides(run_dir.parent) or [], before, console.notices))


def _run_job(cfg: DictConfig, work: Callable | None, run_dir: Path, sweeping: bool, job: list[str]) -> Any:
    from runner.console import log, note
    from runner.rundir import timing

    clock = timing.job_clock()
    clock.lap("config")
    try:
        if sweeping and rundir.is_finished(run_dir, job):  # the same sweep run again: this job is done
            return objective(json.loads((run_dir / rundir.RESULTS).read_text(encoding="utf-8")))
        note("runner train %s (run folder %s)", " ".join(job) or "with the defaults", run_dir)
        if sweeping:
            rundir.claim_job(run_dir, job)
        config = checked_config(cfg, clock)
        _share_cores(config)
        if log.isEnabledFor(logging.DEBUG):  # hydra.verbose=runner
            log.debug("the resolved config:\n%s", OmegaConf.to_yaml(cfg, resolve=True).rstrip())
        clock.lap("config")
        if work is None:
            from runner.experiment import train as work

        clock.lap("imports")
        results = work(config, run_dir, clock)
        rundir.replaced(run_dir)  # the new run is whole: a run it replaced (overwrite=true) goes now
        rundir.write_status(run_dir, "ok", resume=None)
        for state in rundir.fit_states(run_dir):
            state.unlink()  # the run is finished: its fit state is no longer needed
        log.debug("seconds per phase: %s", (results or {}).get("timing"))
        note("status ok: %s", run_dir / rundir.RESULTS)
        return objective(results)
    except (RunnerError, OmegaConfBaseException) as exc:
        message = str(exc) if isinstance(exc, RunnerError) else explain(exc)
    except OSError as exc:
        where = exc.filename or run_dir
        message = f"could not write {where}: {rundir.reason(exc)}"
        if sweeping or not rundir.replacing(run_dir):
            message += f"; the run in {run_dir} is incomplete"
    except MemoryError:
        message = "out of memory: make the model or the population smaller (model.hidden, trainer.seeds, eval.k)"
    except (Interrupted, KeyboardInterrupt) as stop:  # a signal, wherever the run was
        exc = Interrupted.of(stop)
        exc.run_dir = run_dir
        back = None if sweeping else rundir.rollback(run_dir)
        if back:  # stopped before the run had anything to keep: the folder is as it was
            exc.run_dir = None
            _rolled_back[:] = [back]
        else:
            again = f"runner train {' '.join(sys.argv[1:])}" if sweeping else f"runner resume {run_dir}"
            rundir.fail(run_dir, str(exc), "interrupted", resume=again)
        if sweeping:
            raise exc from None
        _interrupted.append(exc)
        return None
    except SystemExit:  # rich exiting on a closed stdout pipe
        if not rundir.replacing(run_dir) or not rundir.rollback(run_dir):
            rundir.fail(run_dir, "stopped: output closed", "interrupted")
        raise
    except Exception as exc:  # a bug: recorded in the run, raised (a single run) or reported (a sweep)
        line = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if rundir.replacing(run_dir) and rundir.rollback(run_dir):
            pass  # the run it replaced is back; the traceback goes to stderr
        else:
            rundir.fail(run_dir, line)
            try:
                rundir.write_atomic(run_dir / "error.log", traceback.format_exc())
            except OSError:
                pass  # the status line above is what matters; the traceback still goes to stderr
        if not sweeping:
            raise
        traceback.print_exc()
        _job_crashes.append(line)
        _job_errors.append(f"job {run_dir.name} crashed ({line}); traceback in {run_dir / 'error.log'}")
        return None
    # A user error: refused before training started (or before a replacing run was resumable), a single run's
    # folder is put back as it was; a job refused a folder that is not its own writes nothing there.
    note("status failed: %s", message)
    replacing = not sweeping and rundir.replacing(run_dir)
    if (sweeping or not rundir.rollback(run_dir)) and rundir.holds(run_dir):
        rundir.fail(run_dir, message, cause="user")  # a sweep run in other processes exits 2 by it
    elif replacing:
        message += f"; the earlier run in {run_dir} is back"
    _job_errors.append(message if not sweeping else f"job {run_dir.name}: {message}")
    return None


