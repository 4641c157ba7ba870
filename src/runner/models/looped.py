"""Members in turn: the population path for a module vmap cannot run (an LSTM, a forward that branches on its
values or reads them on the host), each member's forward called alone inside every step, as PyTorch would run it.

The parameters, their initialization, the dropout masks and the batch statistics are the generic path's
(LoopPopulation is a FunctionalPopulation that loops where the other vmaps): the same weights either way.
"""

import contextlib
import copy
import functools

import torch

from runner.models.functional import FunctionalPopulation, _member
from runner.models.noise import draw_key_int


class LoopPopulation(FunctionalPopulation):
    """E copies of the user's module in one [E, P] tensor, each member's forward run in turn."""

    def run_members(self, fn, params: dict, inputs: list[torch.Tensor], mask: torch.Tensor | None):
        """fn(member's params, *member's inputs) for each member in turn, with its own random stream, row mask and
        running statistics; `inputs` are [E, B, ...]. Running statistics change only where `updating` says."""
        step, stats = self.step.key, self.step_stats()
        if mask is None:
            mask = torch.ones(inputs[0].shape[:2], device=inputs[0].device)
        # Which member's tensors its backward reaches: one it does not is skipped by the optimizer, as torch.optim
        # skips a parameter whose .grad is None (a forward that branches on its values may leave out a layer).
        tracking = self.training and torch.is_grad_enabled()
        self.reached = set() if tracking else None
        outs = []
        for e in range(inputs[0].shape[0]):
            # In training the engine says on the host how many rows lead each batch before its padding: the member
            # runs on those alone, as PyTorch would (torch's fused batch norm, no mask), its output padded after.
            n = None if self.real_rows is None or not self.training else int(self.real_rows[e])
            whole = n is not None and 1 < n
            # Each member's statistics apart (torch's batch norm keeps its running statistics for backward, and
            # the members' rows share one tensor's version counter), written back after its forward.
            own = {name: s[e].clone() if whole else s[e] for name, s in stats.items()}
            token = _member.set((self.noise.keys[e], step, None if whole else mask[e], own, None))
            try:
                rows = [x[e][:n] if whole else x[e] for x in inputs]
                own_params = {name: p[e] for name, p in params.items()}
                if tracking:
                    for name, tensor in own_params.items():
                        if tensor.requires_grad:
                            tensor.register_hook(functools.partial(_reach, self.reached, (e, name)))
                with self._own_draws(e, step):
                    out = fn(own_params, *rows)
            finally:
                _member.reset(token)
            if whole:
                with torch.no_grad():
                    for name, s in stats.items():
                        s[e].copy_(own[name])
            if whole and n < inputs[0].shape[1]:
                out = torch.cat([out, out.new_zeros(inputs[0].shape[1] - n, *out.shape[1:])])
            outs.append(out)
        self.keep_stats(stats)
        return torch.stack(outs)

    @contextlib.contextmanager
    def _own_draws(self, e: int, step: int):
        """Within: for a module that draws random numbers (torch.randn_like, a drop path's bernoulli_), torch's
        generator seeded from member e's own stream at this step, so its draws are the same beside any other members
        and after a resume; the caller's generator state comes back after."""
        if not self.draws:
            yield
            return
        device = self.flat.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(draw_key_int(int(self.noise.keys[e]), step, TORCH_STREAM) & (2**63 - 1))
            yield

    def unreached(self) -> list[tuple[int, int, int]] | None:
        """After a training backward: (member, offset, size) of each trainable tensor that member's forward did not
        reach, for the optimizer to leave as it was."""
        if getattr(self, "reached", None) is None:
            return None
        return [(e, s.offset, s.size) for e in range(self.n_members) for name, s in self.slots.items()
                if s.trainable and (e, name.removeprefix("norm:")) not in self.reached]


TORCH_STREAM = 1023  # the member stream that seeds torch's generator for a module's own draws


def _reach(reached: set, key: tuple[int, str], grad: torch.Tensor) -> None:
    reached.add(key)


def in_turn(model: FunctionalPopulation) -> LoopPopulation:
    """A copy of the user's population that runs its members in turn: the same module, weights, statistics and
    random streams, each member's forward as PyTorch runs it alone. LoopPopulation keeps no state of its own (but
    what the last backward reached), so the copy only changes class (from the generic path's, or the fast path's)."""
    out = copy.deepcopy(model)
    out.__class__ = LoopPopulation
    return out
