"""Optuna search for `hydra/sweeper=optuna`: the search space from Hydra's sweep grammar, the study, trials.csv.

The sweeper (runner.sweeps.optuna) only launches batches; everything it decides is here.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import rundir
from runner.checked import checked_config
from runner.errors import RunnerError
from runner.rundir.spreadsheet import write_csv

STUDY_FILE = "optuna.db"  # the study's sqlite storage in the sweep dir: re-running the sweep continues it
STUDY_NAME = "runner"
SAMPLERS = ("tpe", "random")


def import_optuna():
    """The optuna module, or one line naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise RunnerError("hydra/sweeper=optuna needs optuna: pip install 'stackrunner[sweeps]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what each batch did
    return optuna


STOCK = "hydra-optuna-sweeper"  # Hydra's own Optuna plugin, whose grammar and options runner's sweeper follows


@dataclass
class SearchSpace:
    """What every trial sets (`fixed` overrides) and what Optuna chooses (a distribution per key)."""

    fixed: list[str]
    distributions: dict[str, Any]

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's job overrides: the fixed ones, then `key=value` for each chosen value."""
        return [*self.fixed, *(f"{key}={_override_text(v)}" for key, v in params.items())]


def _override_text(value: Any) -> str:
    """A chosen value as Hydra's override grammar reads it back as that value (bool and None by Hydra's names)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def search_space(overrides: list) -> SearchSpace:
    """Hydra's sweep grammar as Optuna distributions, as hydra-optuna-sweeper reads it (`distribution`); anything
    else is fixed. A later override of a key wins (the command line over the search preset), except that a key
    searched after it was fixed is refused: hydra-optuna-sweeper would keep the fixed value."""
    import_optuna()
    fixed: dict[str, str] = {}
    distributions: dict[str, Any] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if key in fixed:
                raise RunnerError(f"{key} is fixed ({fixed[key]}) and then searched ({override.input_line}); "
                                  f"{STOCK} keeps the fixed value: give one of them")
            distributions[key] = distribution(override)
        else:
            distributions.pop(key, None)
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    if not distributions:
        raise RunnerError("hydra/sweeper=optuna has nothing to search: give hydra.sweeper.params (or "
                          "hparams_search=heart_optuna) or a sweep override such as optim.lr='interval(1e-4,1e-1)'")
    return SearchSpace(list(fixed.values()), distributions)


def distribution(override) -> Any:
    """One sweep override's distribution, the one hydra-optuna-sweeper makes of it (its
    create_optuna_distribution_from_override), or a one-line RunnerError where runner's would differ:

    - `choice(a, b, ...)`, `a,b,...`, `shuffle(range(...))`: categorical over the values (ints, floats, strings and
      bools as such); a choice of lists or dicts, which the stock plugin refuses, is categorical over their override
      text (runner's addition: `model.hidden=choice([8],[16])`);
    - `interval(a, b)`: uniform floats, `tag(log, interval(a, b))` log-uniform; `int(interval(a, b))` integers a..b
      (`tag(log, int(...))` on a log scale);
    - `range(a, b, step)`: integers (floats: a stepped float distribution) from a by step, but only where Hydra's
      range (which stops before b) and the stock plugin's (which samples b too) hold the same values; where they
      would not, refused with the range that both read alike."""
    import warnings

    import optuna
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer

    key, value = override.get_key_element(), override.value()
    text = override.input_line or f"{key}={value}"
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if not all(isinstance(v, (str, int, float, bool, type(None))) for v in values):
            values = list(override.sweep_string_iterator())  # lists, dicts: as the override text that sets them
        return optuna.distributions.CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):
        log = "log" in (value.tags or ())
        if value.start > value.end or (log and value.start <= 0):
            raise RunnerError(f"{text}: needs start <= end{' and start > 0 on a log scale' if log else ''}")
        if isinstance(value.start, int) and isinstance(value.end, int):  # int(interval(a, b))
            return optuna.distributions.IntDistribution(value.start, value.end, log=log)
        return optuna.distributions.FloatDistribution(float(value.start), float(value.end), log=log)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        values = list(override.sweep_iterator())
        if not values:
            raise RunnerError(f"{text} holds no values")
        floats = any(isinstance(v, float) for v in (start, stop, step))
        low, high, size = min(values), max(values), abs(step)
        if floats:
            alike = f"range({low:g}, {high + size / 2:g}, {size:g})"
        else:
            alike = f"int(interval({low}, {high}))" if size == 1 else f"range({low}, {high + 1}, {size})"
        steps = (stop - start) / step
        if step < 0:
            raise RunnerError(f"{text}: {STOCK} fails on a range that counts down; write {key}={alike} "
                              f"({low} to {high} in both)")
        if abs(steps - round(steps)) < 1e-9:  # the stock plugin samples `stop` too; Hydra's range stops before it
            raise RunnerError(f"{text}: {STOCK} samples {start} to {stop}, its stop included, where Hydra's range "
                              f"stops before {stop}; write {key}={alike} ({low} to {high} in both)")
        with warnings.catch_warnings():  # optuna says it moves `high` onto the step: the values are Hydra's
            warnings.simplefilter("ignore")
            if floats:
                return optuna.distributions.FloatDistribution(float(start), float(stop), step=float(step))
            return optuna.distributions.IntDistribution(start, stop, step=step)
    raise RunnerError(f"{text}: {STOCK} cannot search {type(value).__name__} either; use interval(a, b), "
                      "tag(log, interval(a, b)), int(interval(a, b)), range(a, b, step) or choice(...)")


def selection_metric(job_config) -> str:
    """The metric a sweep's trials are judged by (eval.metric or the task's default), from one job's config."""
    from runner.data.loading import load_dataset
    from runner.config.metric_names import default_metric

    config = checked_config(job_config)
    return config.eval.metric or default_metric(load_dataset(config.dataset).task)


def open_study(sweep_dir: Path, metric: str, sampler: str, seed: int, storage: str | None = None,
               study_name: str | None = None):
    """The sweep dir's study (created, or loaded to continue), its direction from the selection metric; `storage`
    (an Optuna storage URL) and `study_name` as hydra-optuna-sweeper's options, by default optuna.db in the sweep dir
    and "runner".

    The sampler's seed moves on with the trials already in the study, so a continued study asks for new
    points rather than the ones it drew first."""
    optuna = import_optuna()
    from runner.config.metric_names import higher_is_better

    if sampler not in SAMPLERS:
        raise RunnerError(f"hydra.sweeper.sampler={sampler} is not an option; choose one of: {', '.join(SAMPLERS)}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    direction = "maximize" if higher_is_better(metric) else "minimize"
    where = storage or f"sqlite:///{sweep_dir / STUDY_FILE}"
    study = optuna.create_study(storage=where, study_name=study_name or STUDY_NAME, direction=direction,
                                load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise RunnerError(f"the study {study.study_name} in {where} was made to {study.direction.name.lower()}, "
                          f"but val/{metric} is to {direction}: use another hydra.sweep.dir (or study_name)")
    seed = seed + len(study.trials)
    # constant_liar: trials asked together (one batch) are spread out rather than all drawn at the same point.
    study.sampler = (optuna.samplers.TPESampler(seed=seed, constant_liar=True) if sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    return study


def resumed(study, frozen, distributions: dict[str, Any]):
    """A trial an interrupted run left RUNNING, as a Trial to run again: any value its ask had not yet stored
    (a kill between two of them, since Optuna stores each as it is drawn) is drawn now, so it never runs with
    only some of its parameters and the others at their defaults."""
    import optuna

    trial = optuna.trial.Trial(study, frozen._trial_id)
    for name, d in distributions.items():
        if name in frozen.params:
            continue
        if isinstance(d, optuna.distributions.FloatDistribution):
            trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, optuna.distributions.IntDistribution):
            trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            trial.suggest_categorical(name, d.choices)
    return trial


def finished_job_dir(job_dir: Path, job: list[str]) -> bool:
    """Whether a trial's job folder holds its finished run (a resumed study tells it, never trains it again).

    A finished run of other overrides is refused: job folders are named by trial number, so it belongs to
    another study (one restarted over old job folders) and must never pass for this trial's."""
    if not rundir.is_finished(job_dir):
        return False
    if rundir.is_finished(job_dir, job) and _job_overrides(job_dir) in (None, job):
        return True
    raise RunnerError(f"{job_dir} holds the finished run of other overrides than its trial's ({' '.join(job)}); "
                      "it is not this study's: move it away or choose another hydra.sweep.dir")


def ready_job_dir(job_dir: Path, job: list[str]) -> None:
    """Make a trial's job folder ready to launch into: an unfinished run there (a killed job's half-written
    files) is emptied, so the folder ends up holding only the run trained with the trial's parameters."""
    if not job_dir.exists() or finished_job_dir(job_dir, job):
        return
    rundir.claim(job_dir, overwrite=True, key="hydra.sweep.dir", job=job)
    rundir.replaced(job_dir)  # the killed job's files go now, not once the new run has saved its state
    rundir.release(job_dir)


def _job_overrides(job_dir: Path) -> list | None:
    """The overrides Hydra recorded for the job in `job_dir` (None: none recorded)."""
    import yaml

    try:
        return yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def consecutive(trials: list, most: int) -> list[list]:
    """`trials` as batches of at most `most` with consecutive numbers: a launcher numbers a batch's job folders
    from its first job on, and each trial's folder must be the one named by its number."""
    batches: list[list] = []
    for trial in sorted(trials, key=lambda t: t.number):
        last = batches[-1] if batches else None
        if last and len(last) < most and last[-1].number + 1 == trial.number:
            last.append(trial)
        else:
            batches.append([trial])
    return batches


def tell(study, trial, value: float | None) -> None:
    """Report a trial: its objective, or FAIL for a failed job (never a number standing in for one)."""
    import optuna

    if value is None or not math.isfinite(value):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, value)


def write_trials(study, path: Path) -> "Any":
    """trials.csv: every trial's number, state, value, parameters and job dir; returns the frame."""
    import pandas as pd

    rows = [{"number": t.number, "state": t.state.name, "value": t.value,
             **{f"params.{k}": v for k, v in t.params.items()}, "job_dir": t.user_attrs.get("job_dir")}
            for t in study.trials]
    frame = pd.DataFrame(rows)
    write_csv(path, frame)
    return frame


def best_line(study, metric: str) -> str:
    """The best trial in one line: number, value, parameters and job dir; or why there is none."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return "no trial finished: see each job's status.json in the sweep dir"
    best = study.best_trial
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    return (f"best trial {best.number}: val/{metric} = {best.value:.4f} ({study.direction.name.lower()}d over "
            f"{len(done)} finished trials) with {params}; job dir {best.user_attrs.get('job_dir')}")


def objective(results: dict | None) -> float | None:
    """A job's sweep objective: the mean validation selection metric of its results.json dict (never a test
    metric, so a search cannot fit the test rows); None for a failed job or a metric that is not finite."""
    if not results:
        return None
    value = results.get("validation", {}).get(f"val/{results['selection']['metric']}", {}).get("mean")
    return float(value) if value is not None and math.isfinite(value) else None
