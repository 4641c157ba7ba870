"""A sweep's jobs as populations: which jobs train together, and one shared fit cut into each job's slice."""

import dataclasses
import hashlib
from pathlib import Path

from runner.config.schema import Config, name_of
from runner.config.sharing import group_key
from runner.data.preprocess import preprocess
from runner.fit import Fitted, fit_population
from runner.rundir.layout import fit_state
from runner.sampling import member_configs
from runner.study import Study


def shares(cfg: Config) -> bool:
    """Whether a job may train inside a shared population. Ensembles (their meta-models and students train
    after the fit, on the job's own plan), eval.refit (a second fit per job) and trainer.resume (a job's own
    saved fit state) run alone, through the ordinary path, where sharing them is not shown to be exact."""
    return name_of(cfg.ensemble.name) == "none" and not cfg.eval.refit and not cfg.trainer.resume


def groups(keys: list[str | None]) -> list[list[int]]:
    """Job positions grouped by equal key, in order of each group's first job; a None key is a group of one."""
    out: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(("alone", i) if key is None else key, []).append(i)
    return list(out.values())


def key_of(cfg: Config) -> str | None:
    """The job's group key, or None for a job that trains alone."""
    return group_key(cfg) if shares(cfg) else None


def fit_group(studies: list[Study], label: str, state: Path | None = None) -> list[Fitted]:
    """Train every study's members as one population; returns each study's slice, its members renumbered
    0..E_j-1: the fit each would have had alone ("stacked equals alone"). `state`: the group's fit-state file,
    saved now and then and on a stop signal, and continued from when the sweep is run again."""
    members, spans = [], []
    for study in studies:
        spans.append(list(range(len(members), len(members) + len(study.members))))
        members += [dataclasses.replace(m, index=len(members) + i) for i, m in enumerate(study.members)]
    first = studies[0]
    pre = preprocess(first.dataset, members)  # members with equal training rows share one fit
    member_cfgs = []  # each job's config, or its members' draws of sample.*
    for study in studies:
        own = member_configs(study.cfg, study.members, study.loss == "mse")
        member_cfgs += own or [study.cfg] * len(study.members)
    fitted = fit_population(dataclasses.replace(first, members=members), members, pre, label,
                            member_cfgs=member_cfgs, state=state)
    return [fitted.take(span) for span in spans]


def state_file(first_dir: Path, jobs: list[list[str]]) -> Path:
    """Where a group keeps its fit state: in its first job's folder, named for exactly these jobs' overrides
    (a group of other jobs never continues from it)."""
    digest = hashlib.sha256(repr(jobs).encode()).hexdigest()[:12]
    return fit_state(first_dir, f"group_{digest}")


def job_numbers(numbers: list[int]) -> str:
    """'jobs 0-5', 'jobs 0, 2, 4', 'job 3': the jobs of a group, runs of consecutive numbers as ranges."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return f"job{'s' * (len(numbers) > 1)} {text}"
