"""Fitting one population, and cutting a trained population into the slices that jobs finish as if they ran alone."""

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape

from runner import rundir
from runner.config.schema import Config
from runner.console import console, epoch_progress
from runner.data.dataset import Dataset
from runner.data.preprocess import Preprocessed
from runner.data.splits import Member
from runner.engine.device import fit_workers, small_step
from runner.engine.inputs import MemberInputs, batch_rows
from runner.engine.loop import FitResult
from runner.engine.resume import FitCheckpoint, stop_on_signals
from runner.engine.stacking import Stacking, fit_in_groups, members_at_once
from runner.models import Population
from runner.models.noise import MemberNoise
from runner.sampling import member_configs
from runner.study import Study, population


@dataclass
class Fitted:
    """A trained population: its members, their preprocessing, the model with the weights it keeps, its inputs
    on the device and what the fit left behind; member i is row i of every per-member array."""

    members: list[Member]
    pre: Preprocessed
    model: Population
    inputs: MemberInputs
    result: FitResult

    def take(self, members: list[int]) -> "Fitted":
        """`members` only, renumbered 0..len-1 in that order, with their rows of every per-member array:
        what their own fit would have left (stacked equals alone)."""
        rows = torch.as_tensor(members, device=self.model.flat.device)
        model = copy.deepcopy(self.model)
        model.select(rows)
        return Fitted([dataclasses.replace(self.members[i], index=j) for j, i in enumerate(members)],
                      self.pre.take(members), model, self.inputs.select(rows), self.result.take(members))


def fit_population(study: Study, members: list[Member], pre: Preprocessed, over: str | None,
                   epoch_budget: np.ndarray | None = None, run_dir: Path | None = None, stage: str = "fit",
                   member_cfgs: list[Config] | None = None, state: Path | None = None,
                   soft_targets: np.ndarray | None = None, keep_best: bool | None = None) -> Fitted:
    """Build, initialize and train one population; the model ends with the weights it keeps. `over` says what the
    members are over in the header line (None: no header, an ensemble's inner population). `member_cfgs[i]`:
    member i's own job config (a sweep's jobs trained together), for the values in runner.config.sharing.PER_MEMBER;
    by default each member's draws of `sample.*` (runner.sampling), or the study's config for all.
    `soft_targets` [E, n(, K)]: each member's training targets instead of the labels (a distilled student).
    `keep_best`: whether the model keeps each member's best weights rather than its last; by default
    trainer.early_stopping.restore_best, and the last after a fixed `epoch_budget` (refit).

    With `run_dir`, its fit state is saved in checkpoints/<stage>_state.pt now and then and on Ctrl-C / SIGTERM
    (a sweep's group saves its own in `state`, in its first job's folder)."""
    cfg = study.cfg
    if member_cfgs is None:
        member_cfgs = member_configs(cfg, members, regression=study.loss == "mse")
    model, data = population(study, members, pre)
    E = len(members)
    if soft_targets is not None:
        data.inputs.soft = torch.as_tensor(soft_targets, dtype=torch.float32, device=data.inputs.X.device)
    if over is not None:
        console.print(_header(study, model, E, over))
    if state is not None:  # a sweep's group: its own state file, continued whenever the sweep runs again
        checkpoint = FitCheckpoint(state, cfg.trainer.checkpoint_every, resume=True)
    else:
        # A run replacing another (overwrite=true) can resume from its first saved state: the old run goes then.
        checkpoint = None if run_dir is None else FitCheckpoint(
            rundir.fit_state(run_dir, stage), cfg.trainer.checkpoint_every, cfg.trainer.resume,
            saved=lambda: rundir.replaced(run_dir))
    batch = batch_rows(cfg.trainer.batch_size, data.train)
    workers = fit_workers(cfg.trainer.workers, cfg.trainer.threads, study.device, E,
                          small_step(model.macs_per_step(batch)))
    threads_free = (workers == 1 and cfg.trainer.threads is None and study.device.type == "cpu"
                    and torch.get_num_threads() > 1)  # a large step on the threads runner gave it: one, if no slower
    stacking = members_at_once(model, cfg, data, batch, threads_free)
    at_once = stacking.at_once
    model.rows_per_pass = stacking.rows_per_pass(batch)
    if workers > 1 and stacking.member_bytes is not None:  # the workers' groups, in memory at once, fit the budget
        fits = max(1, int(stacking.budget_bytes // stacking.member_bytes))
        workers = min(workers, fits)
        at_once = max(1, min(at_once, fits // workers))
    if at_once < E:
        console.print(_stacking_line(stacking, E))
    if workers > 1:
        console.print(_workers_line(workers, E, cfg))
    if stacking.seconds or at_once < E or workers > 1:  # a choice was made: results.json keeps it
        model.stacking = {**stacking.record(), "workers": workers}
    with stop_on_signals(checkpoint), epoch_progress(cfg.trainer.epochs, E, cfg.trainer.progress) as on_epoch:
        result = fit_in_groups(model, data, cfg, study.loss, at_once, _starting(on_epoch, run_dir), epoch_budget,
                               checkpoint, member_cfgs, stacking.in_turn, workers)
    # The fit state stays until the run is finished (run_task removes it): a stop while the run scores and
    # writes its files resumes from it.
    # Members leaving the fit early took their random streams with them; prediction (test-time dropout)
    # needs every member's own stream again.
    model.noise = MemberNoise([m.seed for m in members], model.flat.device)
    if keep_best is None:
        keep_best = cfg.trainer.early_stopping.restore_best and epoch_budget is None
    model.load_weights(result.best if keep_best else result.last, result.best_stats if keep_best else result.last_stats)
    return Fitted(members, pre, model, data.inputs, result)


def _header(study: Study, model: Population, E: int, over: str) -> str:
    """The line that opens a fit: the data, the model, and the members with what they are over."""
    cfg, dataset = study.cfg, study.dataset
    shape = "x".join(map(str, study.input_shape))
    codes = f" ({len(dataset.categorical)} categorical as codes)" if dataset.codes else ""
    return (f"[bold]{dataset.name}[/]: {len(dataset.y)} rows, {shape} "
            f"{'inputs' if dataset.images is not None else 'features'}"
            f"{codes}, "
            f"{dataset.task}{_positive(cfg, dataset)}{' · ' + escape(dataset.dropped_note()) if dataset.dropped else ''}"
            f" · [bold]{_model_name(cfg, model)}[/]: {model.parameters_per_member():,} parameters per member · "
            f"{E} member{'s' * (E > 1)} ({over}) on {study.device}")


def _stacking_line(stacking: Stacking, E: int) -> str:
    """The header's line when the members train in groups: how many at a time, and what chose it."""
    if stacking.bound == "trainer.stack":
        return f"{E} members in groups of {stacking.at_once} (trainer.stack={stacking.at_once})"
    measured = ", ".join(f"{way} {seconds * 1e3:.3g} ms" for way, seconds in stacking.seconds.items())
    if stacking.bound == "memory":
        return (f"{E} members in groups of {stacking.at_once}: each stacked member holds about "
                f"{stacking.member_bytes / 2**20:.3g} MiB in training, and a group stays within the memory budget of "
                f"{stacking.budget_bytes / 2**20:.4g} MiB (trainer.memory_gb sets it"
                f"{'; per member step ' + measured if measured else ''})")
    if not stacking.in_turn:
        return (f"{E} members trained one at a time on the stacked fast path: faster than stacked together and than "
                f"in turn per member step ({measured}; trainer.stack=N sets it)")
    return (f"{E} members trained one at a time, each as PyTorch runs it alone: faster than stacked per member "
            f"step ({measured}; trainer.stack=N sets it)")


def _workers_line(workers: int, E: int, cfg: Config) -> str:
    """The header's line when groups of members train side by side in worker processes."""
    chosen = (f"trainer.workers={cfg.trainer.workers}" if cfg.trainer.workers is not None else
              "one per core, as each step takes one thread; trainer.workers=1 trains them in this process")
    return f"{E} members trained side by side in {workers} worker processes ({chosen})"


def _starting(on_epoch, run_dir: Path | None):
    """The per-epoch callback, which at the end of the first epoch tells the run folder that every check has
    passed (an overwrite=true's old run stays aside until the new run is finished or resumable)."""
    if run_dir is None:
        return on_epoch

    def call(epoch: int, active: int) -> None:
        rundir.started(run_dir)  # once; later calls find nothing to do
        on_epoch(epoch, active)

    return call


def model_label(cfg: Config) -> str:
    """The model as tables name it: its config's name, or the user's own class by its name (`Net`)."""
    if cfg.model.name != "module":
        return cfg.model.name
    return re.split(r"[:.]", str(cfg.model.target))[-1]


def _model_name(cfg: Config, model: Population) -> str:
    """The model as the header names it; the user's own class with the path it trains on and why."""
    if cfg.model.name != "module":
        return cfg.model.name
    return f"{escape(model_label(cfg))} ({escape(model.path)})"


def _positive(cfg: Config, dataset: Dataset) -> str:
    """The header's note on which class is positive (p_1, precision, recall, AUC are about it)."""
    if dataset.positive is None:
        return ""
    above = cfg.dataset.positive_above
    rule = f" = {dataset.target} > {above:g}" if above is not None else ""
    return f" (positive class: {dataset.positive}{rule})"
