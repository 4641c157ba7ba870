"""The rows each member of a population trains and validates on, and the batches it draws from them each epoch."""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from runner.engine.inputs import CHUNK_ELEMENTS, MemberInputs, padded
from runner.engine.state import MemberState, rng_states, rngs_from


@dataclass
class PopulationData:
    """The population's inputs (rows stored once) and the rows each member trains and validates on."""

    inputs: MemberInputs
    train: list[np.ndarray]
    val: list[np.ndarray]
    seeds: list[int]



class MemberRows(MemberState):
    """The rows, inputs and generators of the members still training, shrunk as members leave."""

    per_member = ("budget", "val_idx", "val_mask")

    def __init__(self, data: PopulationData, budget: Optional[np.ndarray]):
        self.inputs = data.inputs
        device = self.inputs.X.device
        self.train = list(data.train)
        self.rngs = [np.random.default_rng(s) for s in data.seeds]
        self.budget = None if budget is None else torch.as_tensor(budget, device=device)
        self.has_val = any(len(v) for v in data.val)
        self.val_idx = self.val_mask = None
        if self.has_val:
            self.val_idx, self.val_mask = padded(data.val, device)

    def select(self, keep: torch.Tensor) -> None:
        super().select(keep)
        chosen = keep.nonzero().flatten().tolist()
        self.train = [self.train[i] for i in chosen]
        self.rngs = [self.rngs[i] for i in chosen]
        self.inputs = self.inputs.select(keep)

    def state_dict(self) -> dict:
        return {"rngs": rng_states(self.rngs)}  # rows and inputs are rebuilt from the data

    def load_state_dict(self, state: dict) -> None:
        self.rngs = rngs_from(state["rngs"])

    def epoch_batches(self, batch: int):
        """This epoch's row indices [steps, E, B], 0/1 masks [steps, E, B] and, on the host, which of them are
        real rows (not padding) [steps, E, B].

        Each member shuffles its own rows with its own generator, so its batches do not depend on E;
        the rows themselves are gathered (and preprocessed) step by step.
        """
        E = len(self.train)
        steps = int(np.ceil(max(len(r) for r in self.train) / batch))
        idx = np.zeros((E, steps * batch), dtype=np.int64)
        mask = np.zeros((E, steps * batch), dtype=np.float32)
        for e, (rows, rng) in enumerate(zip(self.train, self.rngs)):
            idx[e, : len(rows)] = rows[rng.permutation(len(rows))]
            mask[e, : len(rows)] = 1.0
        device = self.inputs.X.device
        idx_t = torch.from_numpy(idx).view(E, steps, batch).transpose(0, 1).contiguous().to(device)
        masks = torch.from_numpy(mask).view(E, steps, batch).transpose(0, 1).contiguous().to(device)
        real = mask.reshape(E, steps, batch).transpose(1, 0, 2) > 0
        return idx_t, masks, real

    def prefetch(self, idx: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The epoch's preprocessed inputs [steps, E, B, ...] and training targets in one gather, when they fit
        in CHUNK_ELEMENTS; else (None, None) and each step gathers its own [E, B, ...]. Small data saves a few
        tensor operations per step this way (measured: 20% of a heart k-fold fit); large data keeps the
        per-step memory bound."""
        steps, E, B = idx.shape
        if steps * E * B * self.inputs.row_elements > CHUNK_ELEMENTS:
            return None, None
        rows = idx.transpose(0, 1).reshape(E, steps * B)  # member-major: each member's preprocessing applies
        x = self.inputs.x(rows).view(E, steps, B, *self.inputs.X.shape[1:]).transpose(0, 1).contiguous()
        y = self.inputs.train_targets(rows)
        y = y.view(E, steps, B, *y.shape[2:]).transpose(0, 1).contiguous()
        return x, y
