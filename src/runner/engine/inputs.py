"""The population's inputs on the device: every row once, each member's preprocessing applied after the gather."""

from __future__ import annotations

import numpy as np
import torch

from runner.data.preprocess import Preprocessed

# Validation and prediction gather at most this many input elements per chunk (about 16 MB of float32),
# so a large validation set never becomes one [E, n_val, ...] activation tensor.
CHUNK_ELEMENTS = 1 << 22


class MemberInputs:
    """Shared inputs `X` [n, ...] and targets `y` [n], with per-member arrays [E, ...] applied per gather.

    Memory grows as n·d + E·d: a step gathers each member's batch rows `[E, B, ...]` and standardizes them
    with that member's own statistics.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                 fill: torch.Tensor | None = None, y_mean: torch.Tensor | None = None,
                 y_scale: torch.Tensor | None = None, weight: torch.Tensor | None = None):
        E = shift.shape[0]
        self.X, self.y, self.weight = X, y, weight
        # data.preprocess.standardize's map, as x' = x·a + b with a = 1/scale, b = -shift/scale: one fused op per
        # gather (equal to it within float32 rounding, not bit for bit).
        self.a = (1.0 / scale).unsqueeze(1).float()  # [E, 1, *feature]
        self.b = (-shift / scale).unsqueeze(1).float()
        self.fill = None if fill is None else fill.unsqueeze(1).float()
        zeros, ones = torch.zeros(E, device=X.device), torch.ones(E, device=X.device)
        self.y_mean = (zeros if y_mean is None else y_mean.float()).unsqueeze(1)  # [E, 1]
        self.y_scale = (ones if y_scale is None else y_scale.float()).unsqueeze(1)
        self.standardize_y = y_mean is not None and bool((self.y_mean != 0).any() or (self.y_scale != 1).any())
        self.soft: torch.Tensor | None = None  # [E, n(, K)] per-member training targets (distillation)
        # Small data: every member's preprocessed rows [E·n, ...] kept once, so a gather is one operation. Held
        # only while E·n·d fits CHUNK_ELEMENTS (16 MB), so memory never grows as E·n·d beyond that.
        self.dense: torch.Tensor | None = None
        if E * self.X.shape[0] * self.row_elements <= CHUNK_ELEMENTS:
            self.dense = self._apply(self.X.unsqueeze(0)).reshape(E * self.X.shape[0], *self.X.shape[1:])

    @classmethod
    def from_preprocessed(cls, pre: Preprocessed, device, weight: np.ndarray | None = None) -> MemberInputs:
        """Move the shared arrays and every member's fitted preprocessing to `device`."""
        t = lambda a: None if a is None else torch.as_tensor(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return cls(t(pre.X), t(pre.y), t(pre.shift), t(pre.scale), t(pre.fill),
                   t(pre.y_mean.astype(np.float32)), t(pre.y_scale.astype(np.float32)),
                   t(None if weight is None else weight.astype(np.float32)))

    @classmethod
    def identity(cls, X: torch.Tensor, y: torch.Tensor, members: int, weight: torch.Tensor | None = None
                 ) -> MemberInputs:
        """Rows used as they are by every member (no preprocessing): for tests and hand-built populations."""
        shape = (members, *X.shape[1:])
        return cls(X, y, torch.zeros(shape, device=X.device), torch.ones(shape, device=X.device), weight=weight)

    @property
    def members(self) -> int:
        return self.a.shape[0]

    @property
    def row_elements(self) -> int:
        return int(np.prod(self.X.shape[1:]))

    def x(self, idx: torch.Tensor) -> torch.Tensor:
        """Inputs of rows idx [E, B] (each member its own rows), preprocessed per member: [E, B, ...]."""
        shape = (*idx.shape, *self.X.shape[1:])
        if self.dense is not None:
            offsets = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1) * self.X.shape[0]
            return self.dense.index_select(0, (idx + offsets).reshape(-1)).view(shape)
        return self._apply(self.X.index_select(0, idx.reshape(-1)).view(shape))

    def _apply(self, raw: torch.Tensor) -> torch.Tensor:
        """Each member's preprocessing of raw rows [E or 1, B, ...] (missing values filled, then standardized)."""
        if raw.dtype != torch.float32:
            raw = raw.float()
        if self.fill is not None:
            raw = torch.where(torch.isnan(raw), self.fill, raw)
        return torch.addcmul(self.b, raw, self.a)

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        """Targets of rows idx [E, B]: class codes, or each member's standardized regression target."""
        y = self.y.index_select(0, idx.reshape(-1)).view(idx.shape)
        return (y - self.y_mean) / self.y_scale if self.standardize_y else y

    def train_targets(self, idx: torch.Tensor) -> torch.Tensor:
        """The targets training fits: each member's own soft targets where it has them, else `targets`."""
        if self.soft is None:
            return self.targets(idx)
        if self.soft.dim() == 2:
            return torch.gather(self.soft, 1, idx)
        return torch.gather(self.soft, 1, idx.unsqueeze(-1).expand(*idx.shape, self.soft.shape[-1]))

    def weights(self, idx: torch.Tensor) -> torch.Tensor | None:
        """Row weights of rows idx [E, B], or None when every row weighs 1."""
        return None if self.weight is None else self.weight.index_select(0, idx.reshape(-1)).view(idx.shape)

    def chunk_rows(self, at_most: int | None = None) -> int:
        """Rows per member in one validation or prediction chunk (and no more than `at_most`)."""
        rows = max(1, CHUNK_ELEMENTS // max(1, self.members * self.row_elements))
        return rows if at_most is None else max(1, min(rows, at_most))

    def select(self, keep: torch.Tensor) -> MemberInputs:
        """The same shared rows for the members where the bool mask `keep` [E] is true."""
        out = object.__new__(MemberInputs)
        out.__dict__.update(self.__dict__)
        for name in ("a", "b", "fill", "y_mean", "y_scale", "soft"):
            value = getattr(self, name)
            setattr(out, name, None if value is None else value[keep])
        if self.dense is not None:
            n = self.X.shape[0]
            out.dense = self.dense.view(-1, n, *self.X.shape[1:])[keep].reshape(-1, *self.X.shape[1:])
        return out

    def nbytes(self) -> int:
        """Bytes of the tensors held (shared rows, targets, weights and the per-member arrays)."""
        tensors = (self.X, self.y, self.weight, self.a, self.b, self.fill, self.y_mean, self.y_scale, self.soft,
                   self.dense)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def batch_rows(batch_size, train: list) -> int:
    """Rows per member in a training batch: trainer.batch_size, or with "full" the largest training set."""
    return int(max(len(rows) for rows in train)) if batch_size == "full" else int(batch_size)


def padded(rows: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index [E, m] (row 0 as filler) and 0/1 mask [E, m] for ragged per-member row lists."""
    m = max(1, max(len(r) for r in rows))
    idx = np.zeros((len(rows), m), dtype=np.int64)
    mask = np.zeros((len(rows), m), dtype=np.float32)
    for e, r in enumerate(rows):
        idx[e, : len(r)] = r
        mask[e, : len(r)] = 1.0
    return torch.from_numpy(idx).to(device), torch.from_numpy(mask).to(device)
