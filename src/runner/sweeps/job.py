"""One job of `runner train` in its run folder, from its config to status.json: check the config, run the work,
keep status.json true, put a refused run's folder back, and record the job's error in the command's Outcome."""

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import rundir
from runner.checked import checked_config
from runner.config.compose import explain
from runner.config.schema import Config
from runner.errors import Interrupted, RunnerError
from runner.rundir import timing
from runner.rundir.saved import sweep_overrides
from runner.sweeps.outcome import Outcome
from runner.sweeps.search import objective
from runner.sweeps.sweep_report import job_line


def run_task(cfg: DictConfig, outcome: Outcome, work: Callable | None = None) -> Any:
    """One job in its run directory (Hydra's runtime.output_dir): check its config, run `work(config, run_dir,
    clock)` (default: train it alone) and keep status.json true; returns objective(results), None if it failed
    (its error goes to `outcome`)."""
    from runner.console import console  # rich: not for `runner train --help`

    outcome.started = True
    run_dir = Path(HydraConfig.get().runtime.output_dir).absolute()
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    job = list(OmegaConf.to_container(HydraConfig.get().overrides.task))
    before = sweeping and rundir.is_finished(run_dir, job)
    try:
        # A sweep's job: its lines go to its train.log, one line here; a finished one's log stays as it was.
        with console.job(quiet=sweeping, logged=not before):
            return _run_job(cfg, outcome, work, run_dir, sweeping, job)
    finally:
        rundir.release(run_dir)
        if sweeping:
            console.print(job_line(run_dir, sweep_overrides(run_dir.parent) or [], before, console.notices))
            if console.notices:
                outcome.noticed.append(run_dir.name)


def _run_job(cfg: DictConfig, outcome: Outcome, work: Callable | None, run_dir: Path, sweeping: bool,
             job: list[str]) -> Any:
    from runner.console import log, note  # rich: not for `runner train --help`

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
            from runner.experiment import train as work  # torch and the engine: only once a job runs

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
            outcome.rolled_back = back
        else:
            again = f"runner train {' '.join(sys.argv[1:])}" if sweeping else f"runner resume {run_dir}"
            rundir.fail(run_dir, str(exc), "interrupted", resume=again)
        if sweeping:
            raise exc from None
        outcome.interrupted = exc
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
        outcome.crashes.append(line)
        outcome.job_errors.append(f"job {run_dir.name} crashed ({line}); traceback in {run_dir / 'error.log'}")
        return None
    # A user error: refused before training started (or before a replacing run was resumable), a single run's
    # folder is put back as it was; a job refused a folder that is not its own writes nothing there.
    note("status failed: %s", message)
    replacing = not sweeping and rundir.replacing(run_dir)
    if (sweeping or not rundir.rollback(run_dir)) and rundir.holds(run_dir):
        rundir.fail(run_dir, message, cause="user")  # a sweep run in other processes exits 2 by it
    elif replacing:
        message += f"; the earlier run in {run_dir} is back"
    outcome.job_errors.append(message if not sweeping else f"job {run_dir.name}: {message}")
    return None


def _share_cores(config: Config) -> None:
    """Under the joblib launcher, n_jobs jobs run at once: each gets cores // n_jobs torch threads (at least 1),
    unless trainer.threads says otherwise, so jobs x threads never exceeds the cores; and no progress bar (the
    jobs' bars would interleave, and redrawn from worker processes they cost a 12-job sweep minutes)."""
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
