"""Elementwise optimizers over a population's flat [E, P] parameters, one lr and step mask per member.

Each member's update equals what torch.optim would do for that member alone (tested), but a
member can sit a step out (no rows in this batch, or early-stopped) and hold its own learning
rate, which a single torch optimizer over the stacked tensor cannot express. Adam and AdamW run
torch's fused kernel over the members' rows (one step count each); the others are written as
tensor operations over the whole [E, P] stack.
"""

import numpy as np
import torch

from runner.config import OptimConfig, name_of
from runner.engine.state import MemberState


class StackedOptimizer(MemberState):
    """SGD (momentum, nesterov, dampening), Adam, AdamW, RMSprop or Adagrad over `flat` [E, P].

    It steps `source`: the [E, P] parameter, or the population whose `flat` it is (replaced when members
    leave; `select` shrinks the moments to match).
    """

    per_member = ("lr", "steps", "m", "v", "momentum_started")

    def __init__(self, source, cfg: OptimConfig):
        self.source = source
        flat = self.flat
        self.kind = name_of(cfg.name)
        self.cfg = cfg
        members = flat.shape[0]
        self.lr = torch.full((members,), float(cfg.lr), dtype=flat.dtype, device=flat.device)
        self.steps = torch.zeros(members, dtype=flat.dtype, device=flat.device)
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat) if self.kind in ("adam", "adamw", "rmsprop") else None
        if self.kind == "adagrad":
            self.v = torch.full_like(flat, cfg.initial_accumulator_value)
        self.momentum_started = torch.zeros(members, 1, dtype=torch.bool, device=flat.device)
        self.fused = self.kind in ("adam", "adamw")
        self.lr_host = np.full(members, float(cfg.lr))
        self._rows: tuple | None = None

    def set_lr(self, lr: float | torch.Tensor) -> None:
        """Set every member's learning rate (a number) or each member's own (an [E] tensor)."""
        if isinstance(lr, torch.Tensor):
            self.lr = lr.to(self.flat.dtype).clone()
            self.lr_host = lr.detach().cpu().numpy().astype(float)
        else:
            self.lr.fill_(lr)
            self.lr_host.fill(lr)

    @property
    def flat(self) -> torch.Tensor:
        return getattr(self.source, "flat", self.source)

    def select(self, keep: torch.Tensor) -> None:
        super().select(keep)
        self.lr_host = self.lr.detach().cpu().numpy().astype(float)
        self._rows = None

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.lr_host = self.lr.detach().cpu().numpy().astype(float)
        self._rows = None

    @torch.no_grad()
    def step(self, active: torch.Tensor, chosen: np.ndarray | None = None) -> None:
        """Update the members where `active` [E] is true; the others keep params and state.

        `chosen` is the same mask on the host (None: compute it from `active`), which the fused
        kernel needs to pick the members' rows.
        """
        if self.fused:
            self._fused_adam(active.cpu().numpy() if chosen is None else chosen)
            return
        a = active.to(self.flat.dtype).unsqueeze(1)  # [E, 1]
        self.steps += active.to(self.steps.dtype)
        lr = (self.lr.unsqueeze(1)) * a
        p, g = self.flat, self.flat.grad
        if self.kind == "sgd":
            self._sgd(p, g, lr, a, active)
        elif self.kind == "rmsprop":
            self._rmsprop(p, g, lr, a, active)
        else:
            self._adagrad(p, g, lr, a)

    def _fused_adam(self, chosen: np.ndarray) -> None:
        c = self.cfg
        grad = self.flat.grad
        if self._rows is None or self._rows[0] is not grad:
            # Row views stay valid while the gradient tensor is reused (the loop zeroes it in place).
            self._rows = (grad, self.flat.detach().unbind(0), grad.unbind(0), self.m.unbind(0), self.v.unbind(0),
                          self.steps.unbind(0))
        _, params, grads, ms, vs, steps = self._rows
        kernel = torch._fused_adamw_ if self.kind == "adamw" else torch._fused_adam_
        members = np.flatnonzero(chosen)
        lrs = self.lr_host[members]
        for lr in np.unique(lrs):  # one call per distinct learning rate (plateau can split them)
            pick = members[lrs == lr].tolist()
            group = [steps[i] for i in pick]
            torch._foreach_add_(group, 1)
            kernel([params[i] for i in pick], [grads[i] for i in pick], [ms[i] for i in pick],
                   [vs[i] for i in pick], [], group, lr=float(lr), beta1=c.betas[0], beta2=c.betas[1],
                   weight_decay=c.weight_decay, eps=c.eps, amsgrad=False, maximize=False)

    def _sgd(self, p, g, lr, a, active) -> None:
        c = self.cfg
        if c.weight_decay:
            g = g.add(p, alpha=c.weight_decay)
        if c.momentum:
            # torch.optim.SGD: the first step sets the buffer to the gradient (no dampening).
            first = (~self.momentum_started) & active.unsqueeze(1)
            update = torch.where(first, g, self.m * c.momentum + (1 - c.dampening) * g)
            self.m = torch.where(active.unsqueeze(1), update, self.m)
            self.momentum_started |= active.unsqueeze(1)
            g = g.add(self.m, alpha=c.momentum) if c.nesterov else self.m
        p.sub_(lr * g)

    def _rmsprop(self, p, g, lr, a, active) -> None:
        c = self.cfg
        if c.weight_decay:
            g = g.add(p, alpha=c.weight_decay)
        self.v.lerp_(g * g, (1 - c.alpha) * a)
        update = g / (self.v.sqrt() + c.eps)
        if c.momentum:
            self.m = torch.where(active.unsqueeze(1), self.m * c.momentum + update, self.m)
            update = self.m
        p.sub_(lr * update)

    def _adagrad(self, p, g, lr, a) -> None:
        c = self.cfg
        if c.weight_decay:
            g = g.add(p, alpha=c.weight_decay)
        self.v.addcmul_(g * a, g)
        p.sub_(lr * g / (self.v.sqrt() + c.eps))
