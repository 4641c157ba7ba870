"""Elementwise optimizers over a population's flat [E, P] parameters, one lr and step mask per member.

Each member's update equals what torch.optim would do for that member alone (tested), but a
member can sit a step out (no rows in this batch, or early-stopped) and hold its own learning
rate, which a single torch optimizer over the stacked tensor cannot express.
"""

import torch

from runner.config import OptimConfig, name_of


class StackedOptimizer:
    """SGD (momentum, nesterov, dampening), Adam, AdamW, RMSprop or Adagrad over `flat` [E, P]."""

    def __init__(self, flat: torch.Tensor, cfg: OptimConfig):
        self.flat = flat
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

    def keep(self, keep: torch.Tensor, flat: torch.Tensor | None = None) -> None:
        """Keep only the members where `keep` [E] is true, now stepping `flat` (their parameters)."""
        self.flat = flat
        for name in ("lr", "steps", "m", "v", "momentum_started"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[keep])

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """Update the members where `active` [E] is true; the others keep params and state."""
        a = active.to(self.flat.dtype).unsqueeze(1)  # [E, 1]
        self.steps += active.to(self.steps.dtype)
        lr = (self.lr.unsqueeze(1)) * a
        p, g = self.flat, self.flat.grad
        if self.kind == "sgd":
            self._sgd(p, g, lr, a, active)
        elif self.kind == "rmsprop":
            self._rmsprop(p, g, lr, a, active)
        elif self.kind == "adagrad":
            self._adagrad(p, g, lr, a)
        else:
            self._adam(p, g, lr, a)

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

    def _adam(self, p, g, lr, a) -> None:
        c = self.cfg
        b1, b2 = c.betas
        if c.weight_decay:
            if self.kind == "adamw":
                p.mul_(1 - lr * c.weight_decay)
            else:
                g = g.add(p, alpha=c.weight_decay)
        self.m.lerp_(g, (1 - b1) * a)
        self.v.lerp_(g * g, (1 - b2) * a)
        t = self.steps.clamp(min=1).unsqueeze(1)
        denom = self.v.sqrt().div_((1 - b2**t).sqrt_()).add_(c.eps)
        p.addcdiv_(self.m * (lr / (1 - b1**t)), denom, value=-1.0)

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
