"""The population training loop: every member steps in lockstep over its own shuffled rows."""

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from runner.config.metric_names import default_monitor
from runner.config.schema import Config, name_of
from runner.engine import averaging, losses
from runner.engine.augment import Augmenter
from runner.engine.averaging import Averaged
from runner.engine.early_stopping import Divergence, EarlyStopping
from runner.engine.hyper import member_values
from runner.engine.inputs import batch_rows
from runner.engine.optim import StackedOptimizer
from runner.engine.precision import MixedPrecision
from runner.engine.resume import FitCheckpoint
from runner.engine.rows import MemberRows, PopulationData
from runner.engine.schedules import Schedule
from runner.models import Population
from runner.models.stacked import Step

STEP_KEYS = 1 << 20  # random-stream keys per epoch: more than any epoch's steps


@dataclass
class FitResult:
    """What training leaves behind: per-epoch history, the best and last parameters, and the averages asked for."""

    history: dict[str, np.ndarray]  # name -> [epochs, E], NaN where a member was not training
    epochs_run: np.ndarray  # [E]
    best_epoch: np.ndarray  # [E], -1 without validation
    best: torch.Tensor  # [E, P]
    last: torch.Tensor  # [E, P]
    best_stats: torch.Tensor  # [E, Q] running statistics (batch norm) that go with `best`
    last_stats: torch.Tensor
    diverged_epoch: np.ndarray  # [E], -1 for members that did not diverge
    averages: dict[str, Averaged] = field(default_factory=dict)
    # [E] True where the first step's loss, at the initial weights, was not finite: the forward itself gives NaN
    # or inf (no learning rate causes that); all False for a resumed fit
    nonfinite_at_start: np.ndarray | None = None

    def take(self, members: list[int]) -> "FitResult":
        """What `members` alone leave behind, in that order: as if only they had trained (the history ends
        when the last of them stopped, as their own fit's would)."""
        t = torch.as_tensor(members, device=self.best.device)
        epochs = int(self.epochs_run[members].max())
        return FitResult(
            history={k: v[:epochs, members] for k, v in self.history.items()},
            epochs_run=self.epochs_run[members], best_epoch=self.best_epoch[members],
            best=self.best[t], last=self.last[t], best_stats=self.best_stats[t], last_stats=self.last_stats[t],
            diverged_epoch=self.diverged_epoch[members],
            nonfinite_at_start=None if self.nonfinite_at_start is None else self.nonfinite_at_start[members],
            averages={name: Averaged(a.flat[t], a.stats[t], [a.epochs[i] for i in members])
                      for name, a in self.averages.items()},
        )


def fit(
    model: Population,
    data: PopulationData,
    cfg: Config,
    loss: str,
    on_epoch: Optional[Callable[[int, int], None]] = None,
    epoch_budget: Optional[np.ndarray] = None,
    checkpoint: Optional[FitCheckpoint] = None,
    member_cfgs: Optional[list[Config]] = None,
) -> FitResult:
    """Train every member of `model` on its own rows; returns history, best/last weights and averages.

    Members that stop early (or diverge) leave the population at the end of the epoch (their results are
    kept aside), so the step costs only what the members still training need. `epoch_budget` [E] stops
    each member after that many epochs (refit on train + val). `checkpoint` saves the whole fit state now
    and then (and when a signal asks), and resumes from a saved one: the result equals an uninterrupted fit.
    `member_cfgs[i]` is member i's own config: its values of the keys in runner.config.sharing.PER_MEMBER (learning
    rate, weight decay, ...) come from it, everything else from `cfg` (None: `cfg` for every member).
    """
    run = _Run(model, data, cfg, loss, epoch_budget, member_cfgs)
    first = run.restore(checkpoint)  # restore: a saved fit goes on from the epoch after the one it saved
    for epoch in range(first, cfg.trainer.epochs):
        train_loss = run.train_epoch(epoch)  # train an epoch: each member steps over its own shuffled rows
        run.evaluate(epoch, train_loss)  # evaluate: early stopping, schedules, averages and divergence see it
        if on_epoch is not None:
            on_epoch(epoch, run.still_training())
        if not run.retire_stopped():  # retire members: those that stopped leave; none left ends the fit
            break
        if checkpoint is not None and epoch + 1 < cfg.trainer.epochs and checkpoint.due(epoch):
            checkpoint.save(run.state_dict(epoch))
    else:
        run.retire_everyone()  # the last epoch ran: every member still training leaves now
    return run.result(epoch)  # result: every member's weights and history by its index in the population


class _Run:
    """One fit's per-member state: the pieces the loop updates, by name; all shrink together as members leave."""

    def __init__(self, model: Population, data: PopulationData, cfg: Config, loss: str,
                 epoch_budget: Optional[np.ndarray], member_cfgs: Optional[list[Config]]):
        trainer, es = cfg.trainer, cfg.trainer.early_stopping
        device, E = model.flat.device, model.n_members
        own = member_values(cfg, member_cfgs, E)
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.batch = batch_rows(trainer.batch_size, data.train)
        self.metric = default_monitor(regression=loss == "mse")
        self.criterion = losses.Criterion(loss, cfg.loss, device, own["label_smoothing"])
        self.penalty = losses.Penalty(cfg.reg, model.kernel_mask().to(device), own["l1"], own["l2"])
        self.work = MemberRows(data, epoch_budget)
        self.opt = StackedOptimizer(model, cfg.optim, own, model.decay_mask(name_of(cfg.optim.weight_decay_on)))
        swa = "swa" in averaging.kinds_of(cfg.avg) and cfg.avg.lr is not None
        self.schedule = Schedule(cfg.sched, own["lr"], trainer.epochs, E, device,
                                 cfg.avg.start_epoch if swa else None, cfg.avg.lr if swa else None)
        self.augment = Augmenter(cfg.aug, data.seeds, tuple(data.inputs.X.shape[1:]),
                                 model.outputs if loss == "ce" else 0, device)
        self.avg = averaging.Averages(cfg.avg, model.flat)
        self.stopper = EarlyStopping(model, es, own["patience"], own["min_delta"])
        self.divergence = Divergence(E, device)
        self.precision = MixedPrecision(name_of(trainer.precision), device, E)
        # Every piece of per-member state, in the order the loop updates it; all leave together (`select`).
        self.named = {"model": model, "work": self.work, "opt": self.opt, "schedule": self.schedule,
                      "augment": self.augment, "avg": self.avg, "stopper": self.stopper,
                      "divergence": self.divergence, "criterion": self.criterion, "penalty": self.penalty}
        if self.precision.scaling:
            self.named["precision"] = self.precision
        names = ["train/loss", "lr"] + (["val/loss", self.metric, *model.extra_metrics()] if self.work.has_val else [])
        self.hist = {k: torch.full((trainer.epochs, E), float("nan"), device=device) for k in names}
        self.diverged_epoch = torch.full((E,), -1, device=device)
        self.nonfinite_at_start = torch.zeros(E, dtype=torch.bool, device=device)
        self.done = _Finished(E)
        self.everyone = copy.copy(model.noise)  # every member's random stream, for the whole population after
        self.live = torch.arange(E, device=device)  # global index of each member still in the population
        self.setup = {"members": E, "parameters": model.size, "epochs": trainer.epochs}

    def restore(self, checkpoint: Optional[FitCheckpoint]) -> int:
        """The first epoch to train: after the saved one, with every state as saved (read on the CPU, as the
        state may come from another device, trained on this one); 0 without a saved state."""
        if checkpoint is None or (saved := checkpoint.load(self.setup)) is None:
            return 0
        device = self.device
        self.live, self.diverged_epoch = saved["live"].to(device), saved["diverged_epoch"].to(device)
        self.hist = {k: v.to(device) for k, v in saved["hist"].items()}
        self.done.update({k: v.to(device) for k, v in saved["done"].items()})
        keep = torch.zeros(self.model.n_members, dtype=torch.bool, device=device)
        keep[self.live] = True
        for name, state in self.named.items():
            state.select(keep)
            state.load_state_dict(saved["states"][name])
        return saved["epoch"] + 1

    def state_dict(self, epoch: int) -> dict:
        return {"setup": self.setup, "epoch": epoch, "live": self.live, "hist": self.hist,
                "diverged_epoch": self.diverged_epoch, "done": dict(self.done),
                "states": {name: state.state_dict() for name, state in self.named.items()}}

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass of every member still training over its own shuffled rows; each member's mean training loss."""
        model, work, opt, augment, precision = self.model, self.work, self.opt, self.augment, self.precision
        rates = self.schedule.rates(epoch)
        opt.set_lr(rates)
        self.hist["lr"][epoch, self.live] = rates
        idx, masks, real = work.epoch_batches(self.batch)
        xs, ys = work.prefetch(idx)
        has_rows = real.any(-1) & self.stopper.active.cpu().numpy()  # [steps, E] on the host, for the fused optimizer
        if augment.active:
            augment.new_epoch(real)
        # Per step, views taken once an epoch (an index into a tensor is an operation of its own, several a step).
        stepping = torch.from_numpy(has_rows).to(self.device).unbind(0)
        weighted = work.inputs.weight is not None
        per_step = masks.unbind(0)
        denominators = masks.sum(-1).clamp(min=1e-12).unbind(0) if not weighted else None
        total = torch.zeros(len(self.live), device=self.device)
        weight_sum = torch.zeros(len(self.live), device=self.device)
        model.train()
        model.noise.plan(range(epoch * STEP_KEYS, epoch * STEP_KEYS + len(idx)))
        for s in range(len(idx)):
            # A member's draws depend on its own (epoch, step) only; its real rows lead its batch, padding after.
            # Where every member steps, none has statistics to keep (updating None skips their copies and selects).
            stepping_s = stepping[s]
            step = Step(epoch * STEP_KEYS + s, None if has_rows[s].all() else stepping_s, real[s].sum(-1))
            if (warmed := self.schedule.warmed(rates, stepping_s)) is not None:
                opt.set_lr(warmed)
            rows = idx[s]
            w = per_step[s] * work.inputs.weights(rows) if weighted else per_step[s]
            x = work.inputs.x(rows) if xs is None else xs[s]
            y = work.inputs.train_targets(rows) if ys is None else ys[s]
            if augment.active:
                x, y = augment(x, y, s, model.noise.at(step.key))
            with precision.autocast():
                per_row = model.per_row_loss(self.criterion, x, y, per_step[s], step).float() * w
            denominator = w.sum(1).clamp(min=1e-12) if weighted else denominators[s]
            weight_sum += denominator
            member_loss = per_row.sum(1) / denominator  # [E]
            if epoch == 0 and s == 0:  # before any step: a non-finite loss here is the forward's, not the lr's
                self.nonfinite_at_start = ~torch.isfinite(member_loss.detach())
            # The backward's gradient becomes flat.grad itself (autograd takes it over when none is there), where
            # keeping one to zero and add into moved the parameters' size three more times each step.
            model.flat.grad = None
            precision.backward(member_loss + self.penalty(model.flat) if self.penalty.active else member_loss)
            finite = precision.unscale(model.flat.grad)  # None unless 16-mixed
            _clip(model.flat.grad, self.cfg.trainer.grad_clip)
            opt.step(stepping_s, has_rows[s], finite, model.unreached())
            self.avg.step(model.flat, stepping_s if finite is None else stepping_s & finite)
            precision.update(finite, stepping_s)
            total += per_row.detach().sum(1)
        model.noise.plan(range(0))
        train_loss = total / weight_sum
        self.hist["train/loss"][epoch, self.live] = train_loss
        return train_loss

    def evaluate(self, epoch: int, train_loss: torch.Tensor) -> None:
        """Validation scores to the history, early stopping, a plateau schedule and the averages; a member whose
        training loss diverged, or whose epoch budget is spent, stops training."""
        stopper, monitor, active = self.stopper, self.cfg.trainer.early_stopping.monitor, self.stopper.active
        score = None
        if self.work.has_val:
            val = _validate(self.model, self.work, self.criterion, self.metric)
            for k, v in val.items():
                self.hist[k][epoch, self.live] = v
            stopper.update(epoch, val[monitor], active)
            self.schedule.observe(val, active)
            score = val[monitor] * stopper.sign
        self.avg.epoch(epoch, self.model.flat, score, active)
        stopper.count(active)
        diverged = self.divergence.check(train_loss, active)
        self.diverged_epoch[self.live[diverged]] = epoch
        stopper.stop(diverged)
        if self.work.budget is not None:
            stopper.stop(self.work.budget <= epoch + 1)

    def still_training(self) -> int:
        return int(self.stopper.active.sum())

    def retire_stopped(self) -> bool:
        """Members that stopped leave the population, their results kept aside; False when none is left."""
        keep = self.stopper.active
        if int(keep.sum()) == len(self.live):
            return True
        self.done.store(self.live[~keep], _leaving(self.model, self.stopper, self.avg, ~keep))
        if not keep.any():
            return False
        self.live = self.live[keep]
        for state in self.named.values():
            state.select(keep)
        return True

    def retire_everyone(self) -> None:
        self.done.store(self.live, _leaving(self.model, self.stopper, self.avg, torch.ones_like(self.stopper.active)))

    def result(self, epoch: int) -> FitResult:
        """Every member's results at its global index; the population restored to every member's last weights."""
        model, done, has_val = self.model, self.done, self.work.has_val
        model.resize(done["last"], done["last_stats"])
        model.noise = self.everyone
        averages = {}
        if self.avg.active:
            self.avg.load_state_dict({name: done[name] for name in self.avg.per_member})
            full = MemberRows(self.data, None)
            evaluate = _evaluator(model, full, self.criterion, self.metric, self.stopper.sign,
                                  self.cfg.trainer.early_stopping.monitor, self.batch)
            averages = self.avg.finish(done["last"], done["epochs_run"], evaluate)
            model.resize(done["last"], done["last_stats"])
        return FitResult(
            history={k: v[: epoch + 1].cpu().numpy() for k, v in self.hist.items()},
            epochs_run=done["epochs_run"].cpu().numpy().astype(int),
            best_epoch=done["best_epoch"].cpu().numpy().astype(int),
            best=done["best"] if has_val else done["last"].clone(),
            last=done["last"],
            best_stats=done["best_stats"] if has_val else done["last_stats"].clone(),
            last_stats=done["last_stats"],
            diverged_epoch=self.diverged_epoch.cpu().numpy().astype(int),
            averages=averages,
            nonfinite_at_start=self.nonfinite_at_start.cpu().numpy(),
        )


def _leaving(model: Population, stopper: EarlyStopping, avg: averaging.Averages, local: torch.Tensor) -> dict:
    """What the members selected by the mask `local` leave behind, by name."""
    out = {"last": model.flat.detach(), "last_stats": model.stats, "best": stopper.best_params,
           "best_stats": stopper.best_stats, "best_epoch": stopper.best_epoch, "epochs_run": stopper.epochs_run}
    out.update(avg.state_dict())
    return {k: v[local] for k, v in out.items()}


class _Finished(dict):
    """Full-size results of members that have left the population: name -> [E, ...] by global index."""

    def __init__(self, members: int):
        super().__init__()
        self.n_members = members

    @torch.no_grad()
    def store(self, where: torch.Tensor, leaving: dict[str, torch.Tensor]) -> None:
        """Keep the leaving members' tensors at their global indices `where`."""
        for name, value in leaving.items():
            if name not in self:
                self[name] = torch.zeros((self.n_members, *value.shape[1:]), dtype=value.dtype, device=value.device)
            self[name][where] = value


def _evaluator(model: Population, work: "MemberRows", criterion, metric: str, sign: float, monitor: str, batch: int):
    """evaluate(flat) -> (batch-norm statistics recomputed for `flat`, validation scores [E] of `monitor` times
    `sign`: lower is better)."""

    @torch.no_grad()
    def evaluate(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.flat.data.copy_(flat)
        stats = averaging.recompute_batch_norm(model, work.inputs, work.train, batch)
        model.stats.copy_(stats)
        if not work.has_val:
            return stats, torch.zeros(model.n_members, device=flat.device)
        return stats, _validate(model, work, criterion, metric)[monitor] * sign

    return evaluate


def _clip(grad: torch.Tensor, clip) -> None:
    # Per member: each row of the [E, P] gradient is one member's whole gradient.
    if clip.value is not None:
        grad.clamp_(-clip.value, clip.value)
    if clip.norm is not None:
        norm = grad.norm(dim=1, keepdim=True)
        grad.mul_((clip.norm / (norm + 1e-6)).clamp(max=1.0))


@torch.no_grad()
def _validate(model, work: MemberRows, criterion, metric) -> dict[str, torch.Tensor]:
    """Validation loss and task metric for all members, in chunks of validation rows."""
    inputs, idx, mask = work.inputs, work.val_idx, work.val_mask
    model.eval()
    loss_sum = torch.zeros(idx.shape[0], device=idx.device)
    score_sum, n = torch.zeros_like(loss_sum), torch.zeros_like(loss_sum)
    extras = model.extra_metrics()  # a mixture of experts: each expert's share of the gate, the gate's entropy
    extra_sum = torch.zeros(idx.shape[0], len(extras), device=idx.device)
    step = inputs.chunk_rows(model.rows_per_pass)
    for start in range(0, idx.shape[1], step):
        rows, w = idx[:, start : start + step], mask[:, start : start + step]
        if (rw := inputs.weights(rows)) is not None:
            w = w * rw
        x, y = inputs.x(rows), inputs.targets(rows)
        out = model(x)
        if extras:
            extra_sum += model.extra_sums(x, w)
        loss_sum += (criterion(out, y, smoothing=False) * w).sum(1)
        if metric == "val/rmse":
            score_sum += ((out.squeeze(-1) - y) ** 2 * w).sum(1)
        else:
            pred = (out.squeeze(-1) > 0).float() if out.shape[-1] == 1 else out.argmax(-1).float()
            score_sum += ((pred == y).float() * w).sum(1)
        n += w.sum(1)
    n = n.clamp(min=1e-12)
    result = {"val/loss": loss_sum / n}
    result[metric] = (score_sum / n).sqrt() * inputs.y_scale.squeeze(1) if metric == "val/rmse" else score_sum / n
    result.update({name: extra_sum[:, k] / n for k, name in enumerate(extras)})
    return result
