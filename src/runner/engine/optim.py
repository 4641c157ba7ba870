"""Elementwise optimizers over a population's flat [E, P] parameters, one lr and step mask per member.

Each member's update equals what torch.optim would do for that member alone (tested), but a
member can sit a step out (no rows in this batch, or early-stopped) and hold its own learning
rate, which a single torch optimizer over the stacked tensor cannot express. Adam and AdamW run
torch's fused kernel over the members' rows (one step count each); the others are written as
tensor operations over the whole [E, P] stack.
"""

import numpy as np
import torch

from runner.config.schema import OptimConfig, name_of
from runner.engine.state import MemberState


class StackedOptimizer(MemberState):
    """SGD (momentum, nesterov, dampening), Adam, AdamW, RMSprop or Adagrad over `flat` [E, P].

    It steps `source`: the [E, P] parameter, or the population whose `flat` it is (replaced when members
    leave; `select` shrinks the moments to match).
    """

    per_member = ("lr", "steps", "m", "v", "momentum_started", "wd", "mom", "beta1", "beta2", "lag")

    def __init__(self, source, cfg: OptimConfig, values: dict[str, np.ndarray] | None = None,
                 decayed: torch.Tensor | None = None):
        """`values`: each member's own lr, weight_decay, momentum, beta1 and beta2 ([E] arrays, engine/hyper.py);
        None: every member takes cfg's. `decayed` [P]: 1 on the entries weight decay applies to (None: all)."""
        self.source = source
        flat = self.flat
        self.kind = name_of(cfg.name)
        self.cfg = cfg
        members = flat.shape[0]
        own = values or {}

        def column(name: str, default: float) -> torch.Tensor:  # [E, 1], float64 where the fused kernel reads it
            value = own.get(name, np.full(members, float(default)))
            return torch.as_tensor(value, dtype=torch.float64, device=flat.device).reshape(members, 1)

        self.wd, self.mom = column("weight_decay", cfg.weight_decay), column("momentum", cfg.momentum)
        self.beta1, self.beta2 = column("beta1", cfg.betas[0]), column("beta2", cfg.betas[1])
        self.lr = torch.full((members,), float(cfg.lr), dtype=flat.dtype, device=flat.device)
        self.steps = torch.zeros(members, dtype=flat.dtype, device=flat.device)
        # [E, P]: the steps each entry sat out while its member stepped (a tensor that member's forward did not
        # reach: torch.optim counts each parameter's steps itself); None until one does.
        self.lag = None
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat) if self.kind in ("adam", "adamw", "rmsprop") else None
        if self.kind == "adagrad":
            self.v = torch.full_like(flat, cfg.initial_accumulator_value)
        self.momentum_started = torch.zeros(members, 1, dtype=torch.bool, device=flat.device)
        self.fused = self.kind in FUSED
        self.decayed = None if decayed is None else decayed.to(flat.device, flat.dtype).unsqueeze(0)  # [1, P]
        self.lr_host = np.full(members, float(cfg.lr))
        self._host()

    def _host(self) -> None:
        """Host copies: the fused kernel groups members by their (lr, betas, weight decay); the tensor-op
        optimizers skip a term no member uses."""
        self.hyper_host = torch.cat([self.beta1, self.beta2, self.wd], 1).cpu().numpy()
        self.decays, self.momentum = bool(self.wd.any()), bool(self.mom.any())
        self.wd_f, self.mom_f = self.wd.to(self.flat.dtype), self.mom.to(self.flat.dtype)
        self._rows = self._calls = None

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
        self._host()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.lr_host = self.lr.detach().cpu().numpy().astype(float)
        self._host()

    @torch.no_grad()
    def step(self, active: torch.Tensor, chosen: np.ndarray | None = None, finite: torch.Tensor | None = None,
             skip: list[tuple[int, int, int]] | None = None) -> None:
        """`step_members`, leaving each (member, offset, size) in `skip` as it was: its entries, and their moments
        (torch.optim skips a parameter with no gradient; the member's step count still advances)."""
        held = [(name, e, slice(o, o + n), getattr(self, name)[e, o : o + n].clone())
                for name in ("flat", "m", "v") if isinstance(getattr(self, name), torch.Tensor)
                for e, o, n in skip or ()]
        self.step_members(active, chosen, finite)
        for name, e, entries, before in held:
            getattr(self, name).data[e, entries] = before
        if skip:
            stepped = (active if finite is None else active & finite).tolist()
            if self.lag is None:
                self.lag = torch.zeros_like(self.flat, dtype=self.steps.dtype).detach()
            for e, o, n in skip:
                self.lag[e, o : o + n] += stepped[e]

    def step_members(self, active: torch.Tensor, chosen: np.ndarray | None = None,
                     finite: torch.Tensor | None = None) -> None:
        """Update the members where `active` [E] is true; the others keep params and state.

        `chosen` is the same mask on the host (None: compute it from `active`), which the fused
        kernel needs to pick the members' rows. `finite` [E] (16-mixed loss scaling): members whose
        gradient overflowed skip the step as if inactive, decided on the device.
        """
        if self.fused:
            if finite is None:
                self._fused_adam(active.cpu().numpy() if chosen is None else chosen)
                return
            # The host mask cannot know which gradients overflowed without a device read: step the chosen
            # members, then put back the rows of those that overflowed (in place: the kernel keeps row views).
            before = [t.clone() for t in (self.flat, self.m, self.v, self.steps)]
            self._fused_adam(active.cpu().numpy() if chosen is None else chosen)
            for now, was in zip((self.flat.data, self.m, self.v, self.steps), before):
                keep = finite.view(-1, *[1] * (now.dim() - 1))
                now.copy_(torch.where(keep, now, was))
            return
        if finite is not None:
            active = active & finite
        a = active.to(self.flat.dtype).unsqueeze(1)  # [E, 1]
        self.steps += active.to(self.steps.dtype)
        lr = (self.lr.unsqueeze(1)) * a
        TENSOR_OPS[self.kind](self, self.flat, self.flat.grad, lr, a, active)

    def _fused_adam(self, chosen: np.ndarray) -> None:
        c = self.cfg
        grad = self.flat.grad
        kernel = FUSED[self.kind]
        member_grads = grad.unbind(0)  # a new tensor each step (the loop lets autograd hand over its gradient)
        # Each chosen member's step count, in one operation (a foreach over E one-value tensors was 60 us a step at
        # E = 50); the kernel reads them through its row views.
        self.steps += 1 if chosen.all() else torch.from_numpy(chosen).to(self.steps.device, self.steps.dtype)
        for pick, lr, beta1, beta2, wd, params, ms, vs, steps in self._groups(chosen):
            grads = [member_grads[i] for i in pick]
            if wd and self.decayed is not None:  # decay on some entries only: done here as torch.optim does it
                rows = slice(None) if len(pick) == len(self.lr_host) else torch.tensor(pick, device=grad.device)
                p, decay = self.flat.detach(), wd * self.decayed
                if self.kind == "adamw":  # decoupled: p *= 1 - lr * wd, before the update
                    p[rows] = p[rows] * (1 - lr * decay)
                else:  # L2: the gradient gains wd * p
                    grad[rows] = grad[rows] + p[rows] * decay
                wd = 0.0
            if self.lag is not None:
                params, grads, ms, vs, steps = self._by_step_count(pick, params, grads, ms, vs, steps)
            kernel(params, grads, ms, vs, [], steps, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=c.eps,
                   amsgrad=False, maximize=False)

    def _by_step_count(self, pick: list[int], *rows: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """The kernel's lists (params, grads, moments, steps) with a member's row split where its entries' step
        counts differ (`lag`): each run of entries takes its own count, as each parameter has its own in
        torch.optim."""
        out = [[] for _ in rows]
        for k, e in enumerate(pick):
            values, counts = torch.unique_consecutive(self.lag[e], return_counts=True)
            start = 0
            for value, count in zip(values.tolist(), counts.tolist()):
                for listed, given in zip(out[:4], rows[:4]):
                    listed.append(given[k][start : start + count] if len(counts) > 1 else given[k])
                out[4].append(rows[4][k] - value if value else rows[4][k])
                start += count
        return out

    def _groups(self, chosen: np.ndarray) -> list[tuple]:
        """The fused kernel's calls: one per distinct (lr, beta1, beta2, weight decay) among the chosen members
        (plateau and sweeps give members their own), with their state's row views. Worked out again only when the
        chosen members or their rates change (most steps reuse the last: a step's host work is the fit's
        overhead on small models)."""
        if self._rows is None or self._rows[0] is not self.flat:
            # Row views stay valid while the parameter tensor does (members leaving replace it).
            self._rows = (self.flat, self.flat.detach().unbind(0), self.m.unbind(0), self.v.unbind(0),
                          self.steps.unbind(0))
            self._calls = None
        key = (chosen.tobytes(), self.lr_host.tobytes())
        if self._calls is None or self._calls[0] != key:
            _, params, ms, vs, steps = self._rows
            members = np.flatnonzero(chosen)
            keys = np.column_stack([self.lr_host[members], self.hyper_host[members]])
            distinct, which = np.unique(keys, axis=0, return_inverse=True)
            calls = []
            for g, (lr, beta1, beta2, wd) in enumerate(distinct):
                pick = members[which.reshape(-1) == g].tolist()
                calls.append((pick, float(lr), float(beta1), float(beta2), float(wd), *(
                    [rows[i] for i in pick] for rows in (params, ms, vs, steps))))
            self._calls = (key, calls)
        return self._calls[1]

    def _decay(self) -> torch.Tensor:
        """Each member's weight decay [E, 1], or [E, P] where some entries take none (frozen ones)."""
        return self.wd_f if self.decayed is None else self.wd_f * self.decayed

    # Each member's weight decay and momentum are [E, 1] columns; a member whose value is 0 gets exactly what
    # skipping the term gives (g + 0·p = g), so it trains as it would alone beside members that use them.
    def _sgd(self, p, g, lr, a, active) -> None:
        c = self.cfg
        if self.decays:
            g = g + p * self._decay()
        if self.momentum:
            # torch.optim.SGD: the first step sets the buffer to the gradient (no dampening).
            first = (~self.momentum_started) & active.unsqueeze(1)
            update = torch.where(first, g, self.m * self.mom_f + (1 - c.dampening) * g)
            self.m = torch.where(active.unsqueeze(1), update, self.m)
            self.momentum_started |= active.unsqueeze(1)
            g = g + self.m * self.mom_f if c.nesterov else self.m
        p.sub_(lr * g)

    def _rmsprop(self, p, g, lr, a, active) -> None:
        c = self.cfg
        if self.decays:
            g = g + p * self._decay()
        self.v.lerp_(g * g, (1 - c.alpha) * a)
        update = g / (self.v.sqrt() + c.eps)
        if self.momentum:
            self.m = torch.where(active.unsqueeze(1), self.m * self.mom_f + update, self.m)
            update = self.m
        p.sub_(lr * update)

    def _adagrad(self, p, g, lr, a, active) -> None:
        c = self.cfg
        if self.decays:
            g = g + p * self._decay()
        self.v.addcmul_(g * a, g)
        p.sub_(lr * g / (self.v.sqrt() + c.eps))


# Every optimizer's update, by optim.name: torch's fused kernel, or a method written as tensor operations. A name
# in neither would have no update (tests/test_engine.py checks that each OptimName is in exactly one).
FUSED = {"adam": torch._fused_adam_, "adamw": torch._fused_adamw_}
TENSOR_OPS = {"sgd": StackedOptimizer._sgd, "rmsprop": StackedOptimizer._rmsprop, "adagrad": StackedOptimizer._adagrad}
