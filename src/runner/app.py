"""`runner train`: the Hydra application; checks a run before anything is written, keeps status.json true."""

import copy
import json
import math
import os
import re
import signal
import sys
import traceback
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import hydra
import yaml
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException, ValidationError

from runner import rundir
from runner.checks import check_task, validate
from runner.config import Config, register
from runner.errors import Interrupted, RunnerError
from runner.paths import conf_dir
from runner.resuming import refuse_changed
from hydra_plugins.runner_config_dir.search_path import ENV as USER_CONFIG_DIR


def train_command(args: list[str]) -> int:
    """Run `runner train [overrides]`; returns the exit status (2 for a user error, 1 for a crashed sweep job,
    128 + the signal for a run stopped by one)."""
    # Let Hydra raise instead of printing its multi-line report, so we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    register()
    try:
        args, config_dir = _take_config_dir(args)
    except Refused as refused:
        return _fail(str(refused))
    sys.argv = ["runner train", *args]
    _job_errors.clear()
    _job_crashes.clear()
    _job_started[:] = [False]
    _interrupted.clear()
    _sweep_config.clear()
    try:
        if config_dir:
            os.environ[USER_CONFIG_DIR] = config_dir
        _hydra_train()
    except Interrupted as exc:
        _interrupted.append(exc)
    except KeyboardInterrupt:
        _interrupted.append(Interrupted(signal.SIGINT))
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
        return _fail(_unreadable_override(args, exc))
    finally:
        os.environ.pop(USER_CONFIG_DIR, None)
        _restore_signals()
    if _interrupted:
        return _report_interrupted(_interrupted[0])
    for message in _job_errors:
        _fail(message)
    from runner.sweep import FAILED

    if FAILED and not _job_errors:  # jobs that ran in other processes (joblib, submitit): read from their dirs
        for line in FAILED:
            _fail(line)
        return 1
    return 1 if _job_crashes else 2 if _job_errors else 0


def _take_config_dir(args: list[str]) -> tuple[list[str], str | None]:
    """`args` without `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`), and DIR as an absolute path.

    runner puts DIR ahead of its shipped configs (hydra_plugins.runner_config_dir), so its files override them.
    """
    rest, found = [], None
    words = iter(args)
    for word in words:
        if word in ("--config-dir", "-cd"):
            found = next(words, None)
            if found is None:
                raise Refused(f"{word} needs a folder: runner train {word} DIR [overrides]")
        elif word.startswith("--config-dir="):
            found = word.split("=", 1)[1]
        else:
            rest.append(word)
    if found is None:
        return rest, None
    folder = Path(found).expanduser().resolve()
    if not folder.is_dir():
        raise Refused(f"--config-dir {found}: no such folder; give the folder that holds your config groups "
                      "(e.g. DIR/model/mine.yaml for model=mine)")
    return rest, str(folder)


def _unreadable_override(args: list[str], exc: Exception) -> str:
    """The line for an override Hydra's grammar cannot read (its parser raises plain errors for some: `=3`)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "LexerNoViableAlt" in type(exc).__name__ + first or "token recognition" in first:
        first = "a character Hydra's override grammar does not allow unquoted"
    return (f"cannot read the overrides {' '.join(args)!r}: {first}; quote a value holding spaces or special "
            "characters, e.g. 'dataset.target=\"my column\"' (see runner train --help)")


def _report_interrupted(exc: Interrupted) -> int:
    """A run or a sweep stopped by a signal: what was kept, and the command that continues it."""
    if _sweep_config:  # a sweep: its summary still lists every job, with its status
        from runner.sweep import SweepReport

        try:
            SweepReport().on_multirun_end(_sweep_config[0])
        except Exception:  # noqa: BLE001 (the summary is a courtesy here; the status files are the record)
            pass
        print(f"{exc}\nresume with the same command: runner train {' '.join(sys.argv[1:])}", file=sys.stderr)
        return exc.status
    if exc.run_dir is None:  # before training started: nothing was written (or it was put back)
        print(f"{exc} before training started; nothing was written", file=sys.stderr)
        return exc.status
    print(f"{exc}\nresume with: runner resume {exc.run_dir}", file=sys.stderr)
    return exc.status


def _guard_signals(run_dir: Path | None) -> None:
    """From the moment a run (or a sweep) owns its folder: SIGTERM and SIGUSR2 stop it through Interrupted, so
    its status.json says interrupted wherever it was (training installs its own handler, which saves the fit
    state first). Ctrl-C is Python's KeyboardInterrupt, handled the same way."""
    from runner.engine.resume import STOP_SIGNALS

    def stop(signum, frame):
        raise Interrupted(signum, run_dir)

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
# "Error executing job" line before runner's resume message.
_interrupted: list[Interrupted] = []


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


class Refused(BaseException):
    """A run refused before Hydra wrote anything. A BaseException because Hydra turns an Exception
    raised in a callback into a warning and goes on to run the job."""


class CheckRun(Callback):
    """Before Hydra makes the run directory: check the config and the data, then claim the directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a bad config, bad data or a used run directory before `.hydra/` is written."""
        try:
            task = task_config(config)
            checked = checked_config(task)
            run_dir = Path(config.hydra.run.dir).absolute()
            if checked.trainer.resume:
                refuse_changed(run_dir, task)
            rundir.claim(run_dir, checked.overwrite, checked.trainer.resume,
                         job=list(OmegaConf.to_container(config.hydra.overrides.task)))
            _guard_signals(run_dir)
        except RunnerError as exc:
            raise Refused(str(exc)) from None
        except OmegaConfBaseException as exc:
            raise Refused(explain(exc)) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a used sweep directory, unless it holds an Optuna study to continue; each job's config is
        checked in its own directory."""
        from runner.search import STUDY_FILE

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
        before = _sweep_overrides(sweep_dir)
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


def _sweep_overrides(sweep_dir: Path) -> list[str] | None:
    """The command-line overrides of the sweep whose multirun.yaml is in `sweep_dir` (None: not a sweep's)."""
    try:
        saved = OmegaConf.load(sweep_dir / "multirun.yaml")
        return list(OmegaConf.to_container(saved.hydra.overrides.task))
    except Exception:  # noqa: BLE001 (missing, unreadable or not Hydra's: not a sweep to resume)
        return None


def task_config(config: DictConfig) -> DictConfig:
    """The composed config without Hydra's own node, as the job will receive it."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def checked_config(cfg: DictConfig) -> Config:
    """The composed config as a checked Config: no unknown keys, valid values, and readable data that suits
    them. Imports nothing heavy (no torch), so a bad config answers at once."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False))
    if unknown:
        raise RunnerError(unknown_key(unknown[0]))
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(config)
    from runner.data.datasets import load_dataset

    dataset = load_dataset(config.dataset)
    check_task(config, dataset.task, dataset.classes)
    return config


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _hydra_train(cfg: DictConfig) -> Any:
    return run_task(cfg)


def run_task(cfg: DictConfig, work: Callable | None = None) -> Any:
    """One job in its run directory (Hydra's runtime.output_dir): check its config, run `work(config, run_dir,
    clock)` (default: train it alone) and keep status.json true; returns objective(results), None if it failed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _job_started[0] = True
    run_dir = Path(HydraConfig.get().runtime.output_dir).absolute()
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    job = list(OmegaConf.to_container(HydraConfig.get().overrides.task))
    try:
        return _run_job(cfg, work, run_dir, sweeping, job)
    finally:
        rundir.release(run_dir)


def _run_job(cfg: DictConfig, work: Callable | None, run_dir: Path, sweeping: bool, job: list[str]) -> Any:
    from runner import timing

    clock = timing.job_clock()
    clock.lap("config")
    try:
        if sweeping and rundir.is_finished(run_dir, job):  # the same sweep run again: this job is done
            from runner.console import console

            console.print(f"job {run_dir.name}: finished before (status ok), not trained again")
            return objective(json.loads((run_dir / rundir.RESULTS).read_text(encoding="utf-8")))
        if sweeping:
            rundir.claim_job(run_dir, job)
        config = checked_config(cfg)
        _share_cores(config)
        clock.lap("config")
        if work is None:
            from runner.train import train as work

        clock.lap("imports")
        results = work(config, run_dir, clock)
        rundir.write_status(run_dir, "ok", resume=None)
        for state in (run_dir / "checkpoints").glob("*_state.pt"):
            state.unlink()  # the run is finished: its fit state is no longer needed
        return objective(results)
    except (RunnerError, OmegaConfBaseException) as exc:
        message = str(exc) if isinstance(exc, RunnerError) else explain(exc)
    except OSError as exc:
        where = exc.filename or run_dir
        message = f"could not write {where}: {rundir.reason(exc)}; the run in {run_dir} is incomplete"
    except MemoryError:
        message = "out of memory: make the model or the population smaller (model.hidden, trainer.seeds, eval.k)"
    except (Interrupted, KeyboardInterrupt) as stop:  # a signal, wherever the run was
        exc = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT, run_dir)
        exc.run_dir = run_dir
        if not sweeping and rundir.rollback(run_dir):
            exc.run_dir = None  # stopped before training: the folder is as it was
        else:
            again = f"runner train {' '.join(sys.argv[1:])}" if sweeping else f"runner resume {run_dir}"
            rundir.fail(run_dir, str(exc), "interrupted", resume=again)
        if sweeping:
            raise exc from None
        _interrupted.append(exc)
        return None
    except SystemExit:  # rich exiting on a closed stdout pipe
        rundir.fail(run_dir, "stopped: output closed", "interrupted")
        raise
    except Exception as exc:  # a bug: recorded in the run, raised (a single run) or reported (a sweep)
        line = f"{type(exc).__name__}: {exc}".splitlines()[0]
        rundir.fail(run_dir, line)
        try:
            (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        except OSError:
            pass  # the status line above is what matters; the traceback still goes to stderr
        if not sweeping:
            raise
        traceback.print_exc()
        _job_crashes.append(line)
        _job_errors.append(f"job {run_dir.name} crashed ({line}); traceback in {run_dir / 'error.log'}")
        return None
    # A user error: refused before training started, a single run's folder is put back as it was.
    if sweeping or not rundir.rollback(run_dir):
        rundir.fail(run_dir, message)
    _job_errors.append(message if not sweeping else f"job {run_dir.name}: {message}")
    return None


def objective(results: dict | None) -> float | None:
    """A job's sweep objective: the mean validation selection metric of its results.json dict (never a test
    metric, so a search cannot fit the test rows); None for a failed job or a metric that is not finite."""
    if not results:
        return None
    value = results.get("validation", {}).get(f"val/{results['selection']['metric']}", {}).get("mean")
    return float(value) if value is not None and math.isfinite(value) else None


# Launchers and sweepers that come with `pip install 'runner[sweeps]'` (and the presets built on them).
EXTRAS = {"hydra/launcher": ("joblib", "submitit_local", "submitit_slurm", "slurm"), "hydra/sweeper": ("optuna",)}


def explain(exc: BaseException) -> str:
    """One line naming the bad key or value and what is allowed, from a Hydra/OmegaConf error."""
    inner = [e for e in (exc.__cause__, exc.__context__) if isinstance(e, OmegaConfBaseException)]
    cause = inner[0] if inner and (exc.__cause__ is inner[0] or getattr(inner[0], "full_key", None)) else exc
    in_file = re.match(r"In '([^']+)': ", str(exc))  # a config file's own key, not an override
    if isinstance(exc, OverrideParseException):
        return (f"{str(exc).strip().splitlines()[0]}: Hydra's override grammar cannot read it; quote a value holding "
                "spaces or special characters, e.g. 'dataset.target=\"my column\"' (see runner train --help)")
    if isinstance(exc, MissingConfigException):
        # "Could not find" names the chosen option; "Could not load" names what a chosen preset extends (slurm's
        # submitit_slurm), and its "In '...'" the preset asked for.
        m = re.search(r"Could not find '([^']+)/([^']+)'", str(exc)) if exc.options else None
        base = re.search(r"In '([^']+)/([^']+)': Could not load '([^']+)/([^']+)'", str(exc))
        if base and base.group(4) in EXTRAS.get(base.group(3), ()):
            return _needs_extra(*base.group(1, 2))
        if m:
            group, choice = m.groups()
            if choice in EXTRAS.get(group, ()):
                return _needs_extra(group, choice)
            return f"{group}={choice} is not an option; choose one of: {', '.join(exc.options)}"
    full_key = getattr(cause, "full_key", None)
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if isinstance(cause, InterpolationResolutionError) and full_key:
        return f"{full_key}: {first} (an interpolation ${{...}} must name a key of the config)"
    if isinstance(cause, OmegaConfBaseException) and full_key:
        line = f"{full_key}: {first}" if isinstance(cause, ValidationError) else unknown_key(full_key)
        return f"{_config_file(in_file.group(1))}: {line}" if in_file else line
    return first


def _config_file(name: str) -> str:
    """The file Hydra composed as `name` (`trainer/default`): the user's --config-dir copy if there is one."""
    user = Path(os.environ.get(USER_CONFIG_DIR, "")) / f"{name}.yaml"
    return str(user) if os.environ.get(USER_CONFIG_DIR) and user.is_file() else f"{name}.yaml"


def _needs_extra(group: str, choice: str) -> str:
    return (f"{group}={choice} needs the sweeps extra: pip install 'runner[sweeps]' (installs optuna and Hydra's "
            "joblib and submitit plugins)")


def unknown_key(full_key: str) -> str:
    """The line for a key the schema does not have, listing the keys its parent does have."""
    parent = full_key.rpartition(".")[0]
    keys = valid_keys(parent)
    where = f"'{parent}'" if parent else "the top level"
    hint = f"; valid keys in {where}: {', '.join(keys)}" if keys else ""
    return f"unknown key '{full_key}'{hint}"


def unknown_keys(node: Any, schema: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys of a plain nested dict (a composed config) that the schema does not have."""
    known = {f.name: f.type for f in fields(schema)}
    out = []
    for key, value in node.items():
        if key not in known:
            out.append(prefix + str(key))
        elif is_dataclass(known[key]) and isinstance(value, dict):
            out.extend(unknown_keys(value, known[key], f"{prefix}{key}."))
    return out


def valid_keys(path: str) -> list[str]:
    """The keys allowed under a dotted config path (`optim` -> lr, momentum, ...)."""
    node: Any = Config
    for part in [p for p in path.split(".") if p]:
        match = [f for f in fields(node) if f.name == part]
        if not match:
            return []
        node = match[0].type
        if not is_dataclass(node):
            return []
    return [f.name for f in fields(node)]
