"""`runner train`: the Hydra application; checks a run before anything is written (each job's life cycle, which
keeps its status.json true, is runner.sweeps.job)."""

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
import yaml
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import rundir, user_code
from runner.checked import checked_config
from runner.commands.arguments import read_arguments
from runner.commands.listing import (
    LISTING_FLAGS,
    complete_as_runner,
    one_config_repository,
)
from runner.config.compose import USER_CONFIG_DIR, explain, task_config, unreadable_override
from runner.config.schema import register
from runner.errors import STOP_SIGNALS, Interrupted, RunnerError, Stopped
from runner.paths import conf_dir
from runner.rundir import timing
from runner.rundir.saved import refuse_changed, sweep_overrides
from runner.sweeps.job import run_task
from runner.sweeps.outcome import Outcome, current, recording
from runner.sweeps.search import STUDY_FILE
from runner.sweeps.sweep_report import SweepReport


def train_command(args: list[str]) -> int:
    """Run `runner train [overrides]`, each error a line on stderr; returns the exit status (2 for a user error,
    1 for a crashed sweep job, 128 + the signal for a run stopped by one)."""
    status, errors = run(args)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return status


def run(args: list[str]) -> tuple[int, list[str]]:
    """`runner train [overrides]` as runner.train calls it: the exit status and the one-line errors, unprinted.
    Everything the command learns is in its own Outcome: calls in one process are independent."""
    argv = sys.argv
    outcome = Outcome()
    try:
        with recording(outcome):
            status = _train(args, outcome)
    finally:
        sys.argv = argv  # Hydra reads the command line from sys.argv; the caller's comes back
    return status, list(outcome.errors)


def _train(args: list[str], outcome: Outcome) -> int:
    """The command: its exit status; each error's line goes to `outcome.errors`."""
    # Let Hydra raise instead of printing its multi-line report, so we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    register()
    user_code.new_command()
    try:
        args, config_dir = read_arguments(args)
    except RunnerError as exc:
        return outcome.fail(str(exc))
    sys.argv = ["runner train", *args]
    if any(arg in ("-sc", "--shell-completion") for arg in args):
        complete_as_runner()
    version_base = _hydra_version_base()
    _hydra_version_base((HYDRA_VERSION_BASE,))
    signals = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS if signum != signal.SIGINT}
    try:
        _guard_signals(None)  # SIGTERM while Hydra composes and checks: one true line, not a silent 143
        if config_dir:
            os.environ[USER_CONFIG_DIR] = config_dir
        with one_config_repository(listing=any(arg in LISTING_FLAGS for arg in args)):
            _hydra_app(outcome)()
    except (Interrupted, KeyboardInterrupt) as stop:  # a signal that no run's own handler took
        exc = Interrupted.of(stop)
        outcome.rolled_back = next(iter(rundir.abandon(str(exc), "interrupted")), None)
        if outcome.sweep_config is None:  # a single run stopped before its own handler: there is nothing to resume
            exc.run_dir = None
        outcome.interrupted = exc
    except Refused as refused:
        return outcome.fail(str(refused))
    except RunnerError as exc:  # from a sweeper (its settings, its search space); a job records its own
        return outcome.fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        return outcome.fail(explain(exc))
    except yaml.YAMLError as exc:  # a config file of the user's (--config-dir) that is not YAML
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
        return outcome.fail(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}); fix the file")
    except Exception as exc:
        if outcome.started:
            raise  # a bug in the run
        if isinstance(exc, OSError):
            if isinstance(exc, BrokenPipeError):
                raise  # a closed pipe (`runner train --help | head`): not an override's fault
            return outcome.fail(f"cannot write {exc.filename or 'the run directory'}: {rundir.reason(exc)}")
        return outcome.fail(unreadable_override(args, exc))
    finally:
        os.environ.pop(USER_CONFIG_DIR, None)
        # A folder still held here was left by an exit past its run's handler (Hydra failing to write .hydra/ on
        # a full disk, a crash): put back what was there, or say in its status.json that it stopped.
        rundir.abandon(outcome.errors[-1] if outcome.errors else "stopped before the run could record why")
        _hydra_version_base(version_base)
        _restore_signals(signals)
    if outcome.interrupted is not None:
        return _report_interrupted(outcome)
    for message in outcome.job_errors:
        outcome.fail(message)
    if outcome.failed and not outcome.job_errors:  # jobs that ran in other processes (joblib, submitit): their dirs
        for line in outcome.failed:
            outcome.fail(line)
        return 1 if outcome.crashed else 2
    return 1 if outcome.crashes else 2 if outcome.job_errors else 0


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


def _report_interrupted(outcome: Outcome) -> int:
    """A run or a sweep stopped by a signal: what was kept, and the command that continues it."""
    exc = outcome.interrupted
    if outcome.sweep_config is not None:  # a sweep: its summary still lists every job, with its status
        try:
            SweepReport().on_multirun_end(outcome.sweep_config)
        except Exception:  # noqa: BLE001 (the summary is a courtesy here; the status files are the record)
            pass
        print(f"{exc}\nresume with the same command: runner train {' '.join(sys.argv[1:])}", file=sys.stderr)
        return exc.status
    if exc.run_dir is None:  # before the run had anything to keep: what was there is back
        print(f"{exc} {outcome.rolled_back or 'before training started; nothing was written'}", file=sys.stderr)
        return exc.status
    print(f"{exc}\nresume with: runner resume {exc.run_dir}", file=sys.stderr)
    return exc.status


def _guard_signals(run_dir: Path | None) -> None:
    """From the start of the command: SIGTERM and SIGUSR2 stop it through Interrupted (carried as Stopped), so
    whatever folder the run holds is put back or says interrupted, wherever it was (training installs its own
    handler, which saves the fit state first). Ctrl-C is Python's KeyboardInterrupt, handled the same way."""

    def stop(signum, frame):
        raise Stopped(Interrupted(signum, run_dir))  # past Hydra's and any library's `except Exception`

    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT:
            try:
                signal.signal(signum, stop)
            except ValueError:  # not the main thread
                pass


def _restore_signals(handlers: dict[int, Any]) -> None:
    """The handlers the command found when it started."""
    for signum, handler in handlers.items():
        try:
            signal.signal(signum, handler)
        except (ValueError, TypeError):  # not the main thread; a handler not set from Python
            pass


class Refused(BaseException):
    """A run refused before Hydra wrote anything. A BaseException because Hydra turns an Exception
    raised in a callback into a warning and goes on to run the job."""


class CheckRun(Callback):
    """Before Hydra makes the run directory: check the config and the data, then claim the directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a bad config, bad data or a used run directory before `.hydra/` is written."""
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
        current().sweep_config = config
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


HYDRA_VERSION_BASE = "1.3"


def _hydra_app(outcome: Outcome) -> Callable[[], Any]:
    """The Hydra application of one command: its task function runs each job through runner.sweeps.job with the
    command's `outcome`; the population launcher calls it with the `work` that finishes a job from a shared fit.
    Made per command, while the command holds Hydra's process-wide version base (Hydra's decorator sets it)."""

    def train_job(cfg: DictConfig, work: Callable | None = None) -> Any:
        return run_task(cfg, outcome, work)

    return hydra.main(config_path=str(conf_dir()), config_name="config", version_base=HYDRA_VERSION_BASE)(train_job)


