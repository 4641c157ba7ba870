"""Members in turn: the population path for a module vmap cannot run (an LSTM, a forward that branches on its
values or reads them on the host), each member's forward called alone inside every step, as PyTorch would run it.

The parameters, their initialization, the dropout masks and the batch statistics are the generic path's
(LoopPopulation is a FunctionalPopulation that loops where the other vmaps): the same weights either way.
"""

import torch

from runner.models.functional import FunctionalPopulation, _member


class LoopPopulation(FunctionalPopulation):
    """E copies of the user's module in one [E, P] tensor, each member's forward run in turn."""

    def run_members(self, fn, params: dict, inputs: list[torch.Tensor], mask: torch.Tensor | None):
        """fn(member's params, *member's inputs) for each member in turn, with its own random stream, row mask and
        running statistics; `inputs` are [E, B, ...]. Running statistics change only where `updating` says."""
        step, stats = self.noise.step, self.step_stats()
        if mask is None:
            mask = torch.ones(inputs[0].shape[:2], device=inputs[0].device)
        outs = []
        for e in range(inputs[0].shape[0]):
            token = _member.set((self.noise.keys[e], step, mask[e], {name: s[e] for name, s in stats.items()}))
            try:
                outs.append(fn({name: p[e] for name, p in params.items()}, *(x[e] for x in inputs)))
            finally:
                _member.reset(token)
        self.keep_stats(stats)
        return torch.stack(outs)
