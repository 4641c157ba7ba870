"""Weight averages within each member: last-k and best-k checkpoints, EMA, SWA and soups, as running buffers over [E, P].

Every average spans one member's own checkpoints: members differ in seed, fold or architecture, so their
weights are not aligned and an element-wise mean of them is not a model (prediction ensembles combine members).
"""

from dataclasses import dataclass
from typing import Callable

import torch

from runner.config.schema import AvgConfig, name_of
from runner.engine.inputs import padded
from runner.engine.state import MemberState
from runner.models.layers import batch_statistics
from runner.models.stacked import BUFFER, Step

KINDS = ("last", "best", "ema", "swa", "soup", "greedy_soup")


@dataclass
class Averaged:
    """One averaging's weights for every member, and which epochs went into each member's average."""

    flat: torch.Tensor  # [E, P]
    stats: torch.Tensor  # [E, Q] batch-norm statistics recomputed on the member's training rows
    epochs: list[list[int]]


def kinds_of(cfg: AvgConfig) -> tuple[str, ...]:
    name = name_of(cfg.name)
    return KINDS if name == "compare" else () if name == "none" else (name,)


class Averages(MemberState):
    """The running buffers of every averaging asked for, each member's in its own rows."""

    def __init__(self, cfg: AvgConfig, flat: torch.Tensor):
        self.cfg, self.kinds = cfg, kinds_of(cfg)
        E, P = flat.shape
        device = flat.device
        zeros = lambda *shape: torch.zeros(E, *shape, device=device)  # noqa: E731
        names = []
        if "last" in self.kinds:
            self.ring, self.ring_epoch = zeros(cfg.k, P), torch.full((E, cfg.k), -1, device=device)
            self.ring_count = zeros()
            names += ["ring", "ring_epoch", "ring_count"]
        pool = max(cfg.k if "best" in self.kinds else 0,
                   cfg.ingredients if {"soup", "greedy_soup"} & set(self.kinds) else 0)
        if pool:
            self.pool, self.pool_score = zeros(pool, P), torch.full((E, pool), float("inf"), device=device)
            self.pool_epoch = torch.full((E, pool), -1, device=device)
            names += ["pool", "pool_score", "pool_epoch"]
        if "ema" in self.kinds:
            self.ema, self.ema_count = zeros(P), zeros()
            names += ["ema", "ema_count"]
        if "swa" in self.kinds:
            self.swa, self.swa_count = zeros(P), zeros()
            names += ["swa", "swa_count"]
        self.per_member = tuple(names)

    @property
    def active(self) -> bool:
        return bool(self.kinds)

    @torch.no_grad()
    def step(self, flat: torch.Tensor, stepping: torch.Tensor) -> None:
        """After an optimizer step: the EMA of the members that stepped (torch.optim.swa_utils' EMA)."""
        if "ema" not in self.kinds:
            return
        n = self.ema_count
        decay = torch.clamp((1 + n) / (10 + n), max=self.cfg.decay) if self.cfg.warmup else torch.full_like(
            n, self.cfg.decay)
        # The first update copies the weights (AveragedModel's n_averaged == 0).
        weight = torch.where(n == 0, 1.0, 1.0 - decay) * stepping
        self.ema.lerp_(flat.detach(), weight.unsqueeze(1))
        self.ema_count += stepping.to(n.dtype)

    @torch.no_grad()
    def epoch(self, epoch: int, flat: torch.Tensor, score: torch.Tensor | None, active: torch.Tensor) -> None:
        """At an epoch's end: the last-k ring, the best-by-validation pool (`score` [E], lower is better), SWA."""
        p = flat.detach()
        if "last" in self.kinds:
            rows = active.nonzero().flatten()
            slot = (self.ring_count[rows] % self.cfg.k).long()
            self.ring[rows, slot] = p[rows]
            self.ring_epoch[rows, slot] = epoch
            self.ring_count += active.to(self.ring_count.dtype)
        if hasattr(self, "pool") and score is not None:
            s = torch.where(active & torch.isfinite(score), score, float("inf"))
            worst = self.pool_score.argmax(1)
            rows = (s < self.pool_score.gather(1, worst.unsqueeze(1)).squeeze(1)).nonzero().flatten()
            self.pool[rows, worst[rows]] = p[rows]
            self.pool_score[rows, worst[rows]] = s[rows]
            self.pool_epoch[rows, worst[rows]] = epoch
        if "swa" in self.kinds and epoch >= self.cfg.start_epoch:
            n = self.swa_count.unsqueeze(1)
            update = torch.where(n == 0, p, self.swa + (p - self.swa) / (n + 1))  # AveragedModel's running mean
            self.swa = torch.where(active.unsqueeze(1), update, self.swa)
            self.swa_count += active.to(self.swa_count.dtype)

    @torch.no_grad()
    def finish(self, last: torch.Tensor, epochs_run: torch.Tensor,
               evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Averaged]:
        """Each averaging's weights for the whole population (the buffers hold every member by now).

        `evaluate(flat)` returns the batch-norm statistics recomputed for `flat` and its validation scores [E]
        (lower is better). A member with nothing to average (no validation, or stopped before SWA began)
        keeps its last weights, and its epochs say so.
        """
        ran = [int(n) for n in epochs_run.tolist()]
        out: dict[str, tuple[torch.Tensor, list[list[int]]]] = {}
        if "last" in self.kinds:
            out["last"] = _mean(self.ring, self.ring_epoch >= 0, self.ring_epoch, last, ran)
        if hasattr(self, "pool"):
            order = self.pool_score.argsort(1)  # best first; empty slots (inf) last
            pool = self.pool.gather(1, order.unsqueeze(2).expand_as(self.pool))
            score, epoch = self.pool_score.gather(1, order), self.pool_epoch.gather(1, order)
            filled = torch.isfinite(score)
            if "best" in self.kinds:
                k = self.cfg.k
                out["best"] = _mean(pool[:, :k], filled[:, :k], epoch[:, :k], last, ran)
            n = self.cfg.ingredients
            if "soup" in self.kinds:
                out["soup"] = _mean(pool[:, :n], filled[:, :n], epoch[:, :n], last, ran)
            if "greedy_soup" in self.kinds:
                out["greedy_soup"] = _greedy(pool[:, :n], filled[:, :n], epoch[:, :n], last, ran, evaluate)
        if "ema" in self.kinds:
            had = self.ema_count > 0
            out["ema"] = (torch.where(had.unsqueeze(1), self.ema, last),
                          [list(range(r)) if h else [r - 1] for r, h in zip(ran, had.tolist())])
        if "swa" in self.kinds:
            had = self.swa_count > 0
            start = self.cfg.start_epoch
            out["swa"] = (torch.where(had.unsqueeze(1), self.swa, last),
                          [list(range(start, r)) if h else [r - 1] for r, h in zip(ran, had.tolist())])
        result = {}
        for name in KINDS:
            if name in out:
                flat, epochs = out[name]
                result[name] = Averaged(flat, evaluate(flat)[0], epochs)
        return result


def _mean(weights, filled, epochs, last, ran) -> tuple[torch.Tensor, list[list[int]]]:
    """The mean of each member's filled checkpoints [E, n, P]; its last weights where none is filled."""
    count = filled.sum(1, keepdim=True)
    mean = (weights * filled.unsqueeze(2)).sum(1) / count.clamp(min=1)
    flat = torch.where(count > 0, mean, last)
    chosen = [sorted(int(e) for e, f in zip(row, ok) if f) or [r - 1]
              for row, ok, r in zip(epochs.tolist(), filled.tolist(), ran)]
    return flat, chosen


def _greedy(pool, filled, epochs, last, ran, evaluate) -> tuple[torch.Tensor, list[list[int]]]:
    """Greedy soup: start from each member's best checkpoint; add the next one in validation order only if the
    member's validation score of the mean does not get worse."""
    total, count = pool[:, 0].clone(), filled[:, 0].float()
    soup = torch.where(filled[:, :1], total, last)
    current = evaluate(soup)[1]
    taken = filled.clone()
    taken[:, 1:] = False
    for i in range(1, pool.shape[1]):
        trial = (total + pool[:, i]) / (count + 1).unsqueeze(1)
        score = evaluate(trial)[1]
        accept = filled[:, i] & (score <= current)
        total = torch.where(accept.unsqueeze(1), total + pool[:, i], total)
        count = count + accept.float()
        current = torch.where(accept, score, current)
        taken[:, i] = accept
    flat = torch.where(count.unsqueeze(1) > 0, total / count.clamp(min=1).unsqueeze(1), last)
    chosen = [sorted(int(e) for e, t in zip(row, ok) if t) or [r - 1]
              for row, ok, r in zip(epochs.tolist(), taken.tolist(), ran)]
    return flat, chosen


BN_STEP = -1  # the random-stream step of the batch-norm recomputation (training steps count from 0)


@torch.no_grad()
def recompute_batch_norm(model, inputs, rows: list, batch: int) -> torch.Tensor:
    """[E, Q] batch-norm statistics of the model's current weights: each member's cumulative average of its
    per-batch statistics over its own training rows, in order (torch.optim.swa_utils.update_bn)."""
    initial = model.stats.clone()
    norm = torch.zeros(initial.shape[1], dtype=torch.bool, device=initial.device)  # batch norm's columns
    for name, (offset, width, value) in model.stat_slots.items():
        if not name.startswith(BUFFER):  # a module's own buffers stay as trained, as update_bn leaves them
            initial[:, offset : offset + width] = value
            norm[offset : offset + width] = True
    if not norm.any():
        return initial
    buffers = initial[:, ~norm]
    idx, mask = padded(rows, inputs.X.device)
    mean, count = torch.zeros_like(initial), torch.zeros(initial.shape[0], 1, device=initial.device)
    was_training = model.training
    model.train()
    for start in range(0, idx.shape[1], batch):
        m = mask[:, start : start + batch]
        model.stats.zero_()  # after the forward, stats = this batch's statistics (each layer's momentum aside)
        model.stats[:, ~norm] = buffers
        with batch_statistics():
            # dropout draws no training step made, the same whichever epoch a member left in
            model(inputs.x(idx[:, start : start + batch]), m, step=Step(key=BN_STEP))
        has = (model.stats[:, norm] != 0).any(1, keepdim=True).float()  # the layer skips a member with too few rows
        count += has
        mean += has * (model.stats - mean) / count.clamp(min=1)
    model.train(was_training)
    out = torch.where(count > 0, mean, initial)
    out[:, ~norm] = buffers
    return out
