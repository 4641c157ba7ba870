"""`hydra/sweeper=optuna`: Optuna search whose trials, asked for together, launch as one batch.

Why our own and not hydra-optuna-sweeper: that plugin pins optuna < 3, while this one runs on current
Optuna's ask-and-tell interface; it keeps the study in a sqlite file in the sweep dir, so re-running the
same command on the same hydra.sweep.dir continues the study (only the missing trials run); and it hands
each batch of `n_jobs` trials to the launcher in one call, so the population launcher trains a batch as
one population. The search space uses the same grammar (interval, tag(log, ...), range, choice).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


@dataclass
class OptunaSweeperConf:
    """hydra.sweeper.* for hydra/sweeper=optuna."""

    _target_: str = "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    sampler: str = "tpe"  # tpe (seeded) or random
    seed: int = 0
    n_trials: int = 20  # in the whole study, counting those an earlier run of the sweep finished
    n_jobs: int = 1  # trials asked for together and launched as one batch (one population)
    # The search space, key: interval(a, b) | tag(log, interval(a, b)) | range(a, b, step) | choice(x, y, ...).
    # The study lives in the sweep dir (optuna.db), so a sweep's directory is its whole record.
    params: Dict[str, str] = field(default_factory=dict)


class OptunaSweeper(Sweeper):
    """Asks Optuna for `n_jobs` trials at a time, launches them as one batch, tells it each job's objective."""

    def __init__(self, sampler: str, seed: int, n_trials: int, n_jobs: int, params: Dict[str, str]) -> None:
        self.sampler, self.seed, self.n_trials, self.n_jobs = sampler, seed, n_trials, n_jobs
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep the context and make the launcher, as Hydra's basic sweeper does."""
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        """Run the study to n_trials trials in batches; write trials.csv and print the best trial."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from runner.console import console
        from runner.errors import RunnerError
        from runner.sweeps import search

        search.import_optuna()
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise RunnerError(f"hydra.sweeper.{key}={value} must be a whole number >= 1")
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = search.search_space(parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + arguments))
        metric = search.selection_metric(self._job_config(space.fixed))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        study = search.open_study(sweep_dir, metric, self.sampler, self.seed)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = [self._launch(study, trials, space, sweep_dir)
                   for trials in search.consecutive(self._interrupted(study, space, sweep_dir), self.n_jobs)]
        while (left := self.n_trials - _counted(study)) > 0:
            asked = [study.ask(space.distributions) for _ in range(min(self.n_jobs, left))]
            for trials in search.consecutive(asked, len(asked)):  # one batch, unless old enqueued trials split it
                returns.append(self._launch(study, trials, space, sweep_dir))
            if _counted(study) < self.n_trials:  # the last batch's line is the summary below
                console.print(f"optuna: {_counted(study)} of {self.n_trials} trials done; "
                              f"{search.best_line(study, metric)}")
        search.write_trials(study, sweep_dir / "trials.csv")
        console.print(f"[bold]{search.best_line(study, metric)}[/] (all trials: {sweep_dir / 'trials.csv'})")
        return returns

    def _job_config(self, overrides: List[str]) -> DictConfig:
        """A job's config without Hydra's node, composed from the overrides every trial shares."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def _launch(self, study, trials: list, space, sweep_dir: Path) -> Any:
        """Launch one batch of consecutive trials (job numbers = trial numbers, so each job folder is named by
        its trial), tell Optuna each outcome."""
        from runner.sweeps import search

        batch = [space.overrides(t.params) for t in trials]
        for trial, job in zip(trials, batch):
            search.ready_job_dir(sweep_dir / str(trial.number), job)
        results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
        for trial, ret in zip(trials, results):
            value = ret.return_value if ret.status == JobStatus.COMPLETED else None
            job_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
            trial.set_user_attr("job_dir", str(job_dir or sweep_dir / str(trial.number)))
            search.tell(study, trial, value if isinstance(value, (int, float)) else None)
        return results

    def _interrupted(self, study, space, sweep_dir: Path) -> list:
        """Trials an interrupted run left RUNNING: one whose job finished is told its objective from its
        results.json; the others are returned, their parameters complete, to run again now in their own job
        folders (emptied of the killed job's files when launched)."""
        import json

        from runner import rundir
        from runner.sweeps import search
        from runner.sweeps.search import objective

        optuna = search.import_optuna()
        again = []
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial = search.resumed(study, frozen, space.distributions)
            job_dir = sweep_dir / str(trial.number)
            if search.finished_job_dir(job_dir, space.overrides(trial.params)):
                trial.set_user_attr("job_dir", str(job_dir))
                results = json.loads((job_dir / rundir.RESULTS).read_text(encoding="utf-8"))
                search.tell(study, trial, objective(results))
            else:
                again.append(trial)
        return again


def _counted(study) -> int:
    """Trials that count towards n_trials: finished (complete or failed), less the interrupted ones that an
    older runner failed and asked again as new trials (`rerun_of`); now an interrupted trial runs again itself."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in states for t in trials) - sum("rerun_of" in t.user_attrs for t in trials)
