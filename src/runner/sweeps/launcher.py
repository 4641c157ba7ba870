"""The population launcher: composes every job, trains each group of compatible jobs as one population, and
writes each job's run directory as Hydra's basic launcher would have had it run alone.

It launches any Hydra app: another app's jobs (its task function is not runner's) run one after another exactly
as Hydra's basic launcher runs them, and so does a job of runner's that cannot share a population; each job's
return, its exception included (status FAILED), reaches the sweeper as the basic launcher delivers it."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from runner import rundir
from runner.checked import checked_config
from runner.config.compose import task_config
from runner.errors import Interrupted, RunnerError
from runner.rundir import is_finished, timing
from runner.sweeps.search import objective

log = logging.getLogger(__name__)


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.runner_population_launcher.population_launcher.PopulationLauncher"


@dataclass
class _Job:
    """One job of the sweep: its number, composed config (Hydra's node included) and run directory."""

    num: int
    config: DictConfig
    run_dir: Path
    study: Any = None  # runner.study.Study, planned when the job may share a population


class PopulationLauncher(Launcher):
    """Launches a sweep's jobs in this process, each group of compatible jobs as one population."""

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.runner_app = is_runner_app(task_function)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if not self.runner_app:
            return self._launch_other_app(job_overrides, initial_job_idx)

        log.info(f"Launching {len(job_overrides)} jobs as populations")
        jobs = [self._compose(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        returns: dict[int, JobReturn] = {}
        for job in jobs:
            if is_finished(job.run_dir, list(OmegaConf.to_container(job.config.hydra.overrides.task))):
                returns[job.num] = _finished_return(job)  # a resumed sweep trains only what is unfinished
        returns.update(self._train([job for job in jobs if job.num not in returns]))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[job.num] for job in jobs]

    def _launch_other_app(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        """Another Hydra app's jobs: each composed and run in turn, as Hydra's basic launcher does."""
        log.info(f"Launching {len(job_overrides)} jobs locally")
        returns = []
        for i, overrides in enumerate(job_overrides):
            returns.append(self._run(self._compose(initial_job_idx + i, overrides), self.task_function))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _train(self, todo: list[_Job]) -> dict[int, JobReturn]:
        """Plan and group the unfinished jobs, train each group here (runner.sweeps.slurm sends them out). The
        command's stopwatch books the sweep's composing, imports and planning, then goes to the first job to run."""
        if not todo:
            return {}  # nothing to run: the stopwatch stays for what does
        clock = timing.job_clock()
        clock.lap("config")  # Hydra composing the sweep and its jobs
        import runner.finish  # noqa: F401 (torch, the engine and the models, as planning imports them)
        from runner.sweeps.population import groups

        clock.lap("imports")
        planned = [_plan(job) for job in todo]
        clock.lap("config")
        timing.hand_on(clock)
        returns: dict[int, JobReturn] = {}
        for number, members in enumerate(groups(planned), 1):
            group = [todo[i] for i in members]
            if len(group) == 1:  # a group of one: the ordinary run, as Hydra's basic launcher has it
                returns[group[0].num] = _stop_if_interrupted(self._run(group[0], self.task_function))
            else:
                returns.update(self._run_group(number, group))
        return returns

    def _compose(self, num: int, overrides: Sequence[str]) -> _Job:
        log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return _Job(num, config, job_folder(config, num))

    def _run_group(self, number: int, group: list[_Job]) -> dict[int, JobReturn]:
        """Train the group's jobs as one population, then finish and write each job's run directory."""
        from runner.console import console
        from runner.sweeps.population import fit_group, job_numbers, state_file

        studies = [job.study for job in group]
        E = sum(len(s.members) for s in studies)
        console.print(f"[bold]group {number}[/]: {job_numbers([j.num for j in group])} as one population of "
                      f"{E} members")
        overrides = [list(OmegaConf.to_container(job.config.hydra.overrides.task)) for job in group]
        for job, job_overrides in zip(group, overrides):
            job.run_dir.mkdir(parents=True, exist_ok=True)
            rundir.claim_job(job.run_dir, job_overrides)
        state = state_file(group[0].run_dir, overrides)

        clock = timing.job_clock()  # the command's, if no job has taken it yet
        try:
            slices: list = fit_group(studies, f"{len(group)} jobs of {', '.join(dict.fromkeys(s.over for s in studies))}",
                                     state)
        except (Interrupted, KeyboardInterrupt) as stop:  # every job of the group stops; its state is kept
            import sys

            exc = Interrupted.of(stop)
            for job in group:
                rundir.fail(job.run_dir, str(exc), "interrupted", resume=f"runner train {' '.join(sys.argv[1:])}")
                rundir.release(job.run_dir)
            raise exc from None
        except Exception as exc:  # noqa: BLE001 (every job of the group fails with it, through its task function)
            slices = [exc] * len(group)
        except BaseException:
            for job in group:
                rundir.fail(job.run_dir, "stopped", "interrupted")
                rundir.release(job.run_dir)
            raise
        clock.lap("train")
        timing.hand_on(clock)  # the group's first job reports its fit
        return {job.num: self._run(job, _finishing(self.task_function, job.study, fitted))
                for job, fitted in zip(group, slices)}

    def _run(self, job: _Job, task_function: Callable) -> JobReturn:
        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=job.config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _stop_if_interrupted(ret: JobReturn) -> JobReturn:
    """A job stopped by a signal stops the sweep: the Interrupted it failed with is raised, so no later group
    starts and the sweeper (Optuna's too) leaves the job's trial to run again when the command is repeated."""
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Interrupted):
        raise ret._return_value
    return ret


def is_runner_app(task_function: Any) -> bool:
    """Whether the app is runner's (`runner train`, whose task function runner.commands.train defines): only its
    jobs are planned as populations and keep their record in status.json."""
    return getattr(task_function, "__module__", None) == "runner.commands.train"


def _plan(job: _Job) -> str | None:
    """The job's group key after planning it (job.study), or None: it runs alone, through the ordinary path,
    which also reports a config or data error as that job's failure."""
    from omegaconf.errors import OmegaConfBaseException

    from runner.finish import check
    from runner.study import plan
    from runner.sweeps.population import key_of

    task = task_config(job.config)
    try:
        cfg = checked_config(task)
        key = key_of(cfg)
        if key is not None:
            job.study = plan(cfg)
            check(job.study)
        return key
    except (RunnerError, OmegaConfBaseException):
        return None


def _finishing(task_function: Callable, study, fitted) -> TaskFunction:
    """The task function that finishes a job from its slice of the group's fit (or fails with the fit's error):
    runner's own, given the work to do in place of training the job alone."""
    from runner.finish import finish

    def work(config, run_dir, clock):
        if isinstance(fitted, BaseException):
            raise fitted
        return finish(study, fitted, run_dir, clock)

    return lambda cfg: task_function(cfg, work)


def _finished_return(job: _Job) -> JobReturn:
    """A finished job's return, from its own files; its directory is left as it is."""
    ret = JobReturn(overrides=OmegaConf.to_container(job.config.hydra.overrides.task), cfg=task_config(job.config),
                    hydra_cfg=job.config, working_dir=str(job.run_dir), task_name=job.config.hydra.job.name,
                    status=JobStatus.COMPLETED)
    ret.return_value = objective(json.loads((job.run_dir / "results.json").read_text(encoding="utf-8")))
    return ret


def job_folder(config, num: int) -> Path:
    """Job `num`'s folder (hydra.sweep.dir / hydra.sweep.subdir) in its composed `config`, which gets the job's
    number (the subdir may read hydra.job.num)."""
    with open_dict(config):
        config.hydra.job.id = num
        config.hydra.job.num = num
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        return Path(str(OmegaConf.select(config, "hydra.sweep.dir")),
                    str(OmegaConf.select(config, "hydra.sweep.subdir"))).absolute()
    finally:
        HydraConfig.instance().cfg = previous
