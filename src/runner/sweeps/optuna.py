"""`hydra/sweeper=runner_optuna` (`optuna` in runner's app): Optuna search whose trials, asked for together, launch
as one batch.

Why our own and not hydra-optuna-sweeper: that plugin pins optuna < 3, while this one runs on current
Optuna's ask-and-tell interface; it keeps the study in a sqlite file in the sweep dir, so re-running the
same command on the same hydra.sweep.dir continues the study (only the missing trials run); and it hands
each batch of `n_jobs` trials to the launcher in one call, so the population launcher trains a batch as
one population. The search space is read as hydra-optuna-sweeper reads it (runner.sweeps.search.distribution), and
its options mean what the stock plugin's mean; each difference is refused in one line that names the stock
plugin's behaviour (`_refuse_differences`, `_refuse_direction`). It runs runner's app only: another app's
objective and direction are its own.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner import rundir
from runner.errors import RunnerError
from runner.sweeps import search
from runner.sweeps.launcher import is_runner_app
from runner.sweeps.search import STOCK, objective


@dataclass
class OptunaSweeperConf:
    """hydra.sweeper.* for hydra/sweeper=runner_optuna (`optuna` in runner's app)."""

    _target_: str = "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    sampler: Any = "tpe"  # tpe (seeded) or random (the stock plugin's sampler group, a node, is refused)
    seed: int = 0
    n_trials: int = 20  # in the whole study, counting those an earlier run of the sweep finished
    n_jobs: int = 1  # trials asked for together and launched as one batch (one population)
    # The search space, key: interval(a, b) | tag(log, interval(a, b)) | int(interval(a, b)) | range(a, b, step) |
    # choice(x, y, ...), read as hydra-optuna-sweeper reads it.
    params: Dict[str, str] = field(default_factory=dict)
    # hydra-optuna-sweeper's options, with its meaning. direction: null, or the selection metric's own (another
    # is refused); storage: null keeps the study in the sweep dir (optuna.db, so a sweep's directory is its whole
    # record), or an Optuna storage URL; study_name: null is "runner"; max_failure_rate: null never stops the
    # search for failed trials, a rate in [0, 1] stops it after a batch with a larger share failed.
    direction: Any = None
    storage: Optional[str] = None
    study_name: Optional[str] = None
    max_failure_rate: Optional[float] = None
    custom_search_space: Optional[str] = None  # refused: the stock plugin calls it with (config, trial)
    search_space: Optional[Dict[str, Any]] = None  # refused: the stock plugin's deprecated form of params


SAMPLER_GROUP = ("hydra.sweeper.sampler as an Optuna sampler (_target_ and arguments, hydra-optuna-sweeper's "
                 "hydra/sweeper/sampler group) is not read here: runner's Optuna sweeper takes "
                 "hydra.sweeper.sampler=tpe|random and hydra.sweeper.seed")


class OptunaSweeper(Sweeper):
    """Asks Optuna for `n_jobs` trials at a time, launches them as one batch, tells it each job's objective."""

    def __init__(self, sampler: Any, seed: int, n_trials: int, n_jobs: int, params: Dict[str, str],
                 direction: Any = None, storage: Optional[str] = None, study_name: Optional[str] = None,
                 max_failure_rate: Optional[float] = None, custom_search_space: Optional[str] = None,
                 search_space: Any = None) -> None:
        self.sampler, self.seed, self.n_trials, self.n_jobs = sampler, seed, n_trials, n_jobs
        self.params = dict(params or {})
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.max_failure_rate = max_failure_rate
        self.custom_search_space, self.search_space = custom_search_space, search_space

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep the context and make the launcher, as Hydra's basic sweeper does."""
        from hydra.core.plugins import Plugins

        if not is_runner_app(task_function):
            raise RunnerError("hydra/sweeper=runner_optuna searches runner's app only (runner train); another Hydra "
                              "app's objective and direction are its own: use hydra-optuna-sweeper, hydra/sweeper=optuna")
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        """Run the study to n_trials trials in batches; write trials.csv and print the best trial."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from runner.console import console

        search.import_optuna()
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise RunnerError(f"hydra.sweeper.{key}={value} must be a whole number >= 1")
        self._refuse_differences()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = search.search_space(parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + arguments))
        metric = search.selection_metric(self._job_config(space.fixed))
        self._refuse_direction(metric)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        study = search.open_study(sweep_dir, metric, self.sampler, self.seed, storage=self.storage,
                                  study_name=self.study_name)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = [self._launch(study, trials, space, sweep_dir)
                   for trials in search.consecutive(self._interrupted(study, space, sweep_dir), self.n_jobs)]
        while (left := self.n_trials - _counted(study)) > 0:
            asked = [study.ask(space.distributions) for _ in range(min(self.n_jobs, left))]
            for trials in search.consecutive(asked, len(asked)):  # one batch, unless old enqueued trials split it
                returns.append(self._launch(study, trials, space, sweep_dir))
                self._stop_on_failures(returns[-1], study, sweep_dir)
            if _counted(study) < self.n_trials:  # the last batch's line is the summary below
                console.print(f"optuna: {_counted(study)} of {self.n_trials} trials done; "
                              f"{search.best_line(study, metric)}")
        search.write_trials(study, sweep_dir / "trials.csv")
        console.print(f"[bold]{search.best_line(study, metric)}[/] (all trials: {sweep_dir / 'trials.csv'})")
        return returns

    def _refuse_differences(self) -> None:
        """One line for each hydra-optuna-sweeper option that runner's sweeper would not read with its meaning."""
        if not isinstance(self.sampler, str):  # a node, or the sampler Hydra instantiated from its _target_
            raise RunnerError(SAMPLER_GROUP)
        if self.custom_search_space:
            raise RunnerError(f"hydra.sweeper.custom_search_space={self.custom_search_space}: {STOCK} calls it with "
                              "(config, trial) to suggest more parameters; runner's does not: give them in "
                              "hydra.sweeper.params")
        if self.search_space:
            raise RunnerError(f"hydra.sweeper.search_space is {STOCK}'s deprecated form of the search space; give "
                              "hydra.sweeper.params (key: interval(a, b), choice(...), ...)")
        rate = self.max_failure_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
            raise RunnerError(f"hydra.sweeper.max_failure_rate={rate} must be a share between 0 and 1 (or null: "
                              "failed trials never stop the search)")

    def _refuse_direction(self, metric: str) -> None:
        """hydra.sweeper.direction may only say what the selection metric says: runner's objective is that metric
        (where the stock plugin optimizes an app's return value in the direction it is told)."""
        from runner.config.metric_names import higher_is_better

        if self.direction is None:
            return
        given = OmegaConf.to_container(self.direction) if OmegaConf.is_config(self.direction) else self.direction
        if isinstance(given, (list, tuple)):
            if len(given) != 1:
                raise RunnerError(f"hydra.sweeper.direction={given}: {STOCK} optimizes several objectives at once; "
                                  f"runner's optimizes one, val/{metric} (set eval.metric to choose it)")
            given = given[0]
        own = "maximize" if higher_is_better(metric) else "minimize"
        if str(getattr(given, "name", given)).lower() != own:
            raise RunnerError(f"hydra.sweeper.direction={given}: runner's objective is val/{metric}, which is to "
                              f"{own} ({STOCK} would {given} whatever the app returns); leave direction unset or "
                              "set eval.metric")

    def _stop_on_failures(self, returns, study, sweep_dir: Path) -> None:
        """hydra.sweeper.max_failure_rate as hydra-optuna-sweeper has it: a batch with a larger share of failed
        trials stops the search (trials.csv written first)."""
        if self.max_failure_rate is None or not returns:
            return
        failed = sum(ret.status != JobStatus.COMPLETED or not isinstance(ret.return_value, (int, float))
                     for ret in returns)
        if failed / len(returns) > self.max_failure_rate:
            search.write_trials(study, sweep_dir / "trials.csv")
            raise RunnerError(f"{failed} of {len(returns)} trials of the batch failed, more than "
                              f"hydra.sweeper.max_failure_rate={self.max_failure_rate} allows; each job's status.json "
                              "says why")

    def _job_config(self, overrides: List[str]) -> DictConfig:
        """A job's config without Hydra's node, composed from the overrides every trial shares."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def _launch(self, study, trials: list, space, sweep_dir: Path) -> Any:
        """Launch one batch of consecutive trials (job numbers = trial numbers, so each job folder is named by
        its trial), tell Optuna each outcome."""
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
