"""A population's parameters: one flat [E, P] tensor that every layer views into."""

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from runner.errors import RunnerError
from runner.models.noise import MemberNoise

# Copies of [E, P] a fit keeps: the weights, their gradient, Adam's two moments, the best and the last.
TRAINING_COPIES = 6


def _check_memory(members: int, size: int) -> None:
    """One line, before allocating, when the population's parameters and training state cannot fit in the
    memory this machine has available (Linux's MemAvailable; unknown elsewhere: not checked)."""
    try:
        meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii"))
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return
    need = members * size * 4 * TRAINING_COPIES
    if need > available:
        raise RunnerError(f"the population needs about {need / 2**30:.1f} GiB for its parameters and their training "
                          f"state ({members} member{'s' * (members > 1)} x {size:,} parameters), but this machine "
                          f"has {available / 2**30:.1f} GiB available: make the model or the population smaller "
                          "(model.hidden, model.channels, trainer.seeds, eval.k)")


@dataclass(frozen=True)
class Step:
    """What one forward pass tells the population beside its inputs: the pass's key in every member's random stream
    (a training step's number; dropout and noise draw from it), the members whose running statistics may change
    ([E] bool; None: all of them), and on the host, in training, how many real rows lead each member's batch
    before its padding ([E]; None: the row mask alone says)."""

    key: int = 0
    updating: torch.Tensor | None = None
    real_rows: np.ndarray | None = None


NO_STEP = Step()  # a pass outside training: no draws a training step made, every member's statistics
BUFFER = "buffer:"  # the name prefix of a module buffer kept among the statistics (one per member, not batch norm's)


@dataclass(frozen=True)
class Slot:
    """Where one named tensor of every member lives in the flat [E, P] parameter."""

    name: str
    shape: tuple[int, ...]
    offset: int
    kernel: bool  # kernels get L2/decay-style penalties; biases and norm parameters do not
    fan_in: int
    fan_out: int
    reads_inputs: bool = False  # first layer: its kernel's rows are the input columns, its fan-in their count
    trainable: bool = True  # False: a parameter the user froze (requires_grad=False), which never changes

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Population(nn.Module):
    """E independent models whose parameters are stacked in one `[E, P]` tensor.

    Keeping every member's parameters in one row of `flat` makes the optimizer, early-stopping
    snapshots and checkpoint averaging single tensor operations over the population.
    """

    def __init__(self, members: int):
        super().__init__()
        self.n_members = members
        self.slots: dict[str, Slot] = {}
        self.size = 0
        self.stat_slots: dict[str, tuple[int, int, float]] = {}  # name -> (offset, width, initial value)
        self.stat_size = 0
        self.step = NO_STEP  # the pass under way (`__call__`'s `step`): what layers read besides their inputs
        # Rows per member in one pass without gradients (validation, scoring), where activations rather than inputs
        # bound it (the stacking probe measured them); None: MemberInputs.chunk_rows's bound by input size
        self.rows_per_pass: int | None = None
        self.noise = MemberNoise([0] * members)  # each member's own random stream; `initialize` keys it by seed
        self.sampling = False  # dropout stays on in eval mode (test-time dropout passes)
        self._views: dict[str, torch.Tensor] | None = None  # the parameters' views during a forward pass
        self.stacking: dict = {}  # how many members stepped together and the timings that chose it (results.json)

    def add(self, name: str, shape: tuple[int, ...], kernel: bool, fan_in: int, fan_out: int,
            reads_inputs: bool = False, trainable: bool = True) -> None:
        """Declare a per-member tensor of `shape`; call `allocate` after the last one."""
        self.slots[name] = Slot(name, tuple(shape), self.size, kernel and trainable, fan_in, fan_out, reads_inputs,
                                trainable)
        self.size += math.prod(shape)

    def add_stat(self, name: str, width: int, initial: float) -> None:
        """Declare a per-member running statistic (batch norm), kept in the `stats` [E, Q] buffer."""
        self.stat_slots[name] = (self.stat_size, width, initial)
        self.stat_size += width

    def allocate(self) -> None:
        _check_memory(self.n_members, self.size)
        self.flat = nn.Parameter(torch.zeros(self.n_members, self.size))
        stats = torch.zeros(self.n_members, self.stat_size)
        for offset, width, initial in self.stat_slots.values():
            stats[:, offset : offset + width] = initial
        self.register_buffer("stats", stats)

    @torch.no_grad()
    def select(self, keep: torch.Tensor) -> None:
        """Drop the members where the bool mask `keep` [E] is false (early-stopped, kept elsewhere)."""
        self.resize(self.flat.detach()[keep], self.stats[keep])
        self.noise.select(keep)

    def resize(self, flat: torch.Tensor, stats: torch.Tensor) -> None:
        """Replace the population's parameters and statistics (any number of members)."""
        self.flat = nn.Parameter(flat.detach().clone())
        self.stats = stats.clone()
        self.n_members = flat.shape[0]

    @torch.no_grad()
    def load_weights(self, flat: torch.Tensor, stats: torch.Tensor) -> None:
        """Copy weights `flat` [E, P] and batch-norm statistics `stats` [E, Q] into the population, in place."""
        self.flat.copy_(flat)
        self.stats.copy_(stats)

    def stat(self, name: str) -> torch.Tensor:
        """The [E, 1, width] view of a running statistic."""
        offset, width, _ = self.stat_slots[name]
        return self.stats[:, offset : offset + width].view(self.n_members, 1, width)

    def view(self, name: str) -> torch.Tensor:
        """The `[E, *shape]` view of one named tensor (gradients flow into `flat`)."""
        if self._views is not None:
            return self._views[name]
        s = self.slots[name]
        return self.flat[:, s.offset : s.offset + s.size].view(self.n_members, *s.shape)

    @property
    def updating(self) -> torch.Tensor | None:
        return self.step.updating

    @property
    def real_rows(self) -> np.ndarray | None:
        return self.step.real_rows

    def __call__(self, *args, step: Step = NO_STEP, **kwargs):
        """The forward pass on `args` under `step` (see Step)."""
        # One split of `flat` per forward pass: its backward is one concatenation of the tensors' gradients,
        # where a slice per tensor would zero-fill an [E, P] gradient for each (measured: 9% of a CNN step).
        sizes = [s.size for s in self.slots.values()]
        parts = self.flat.split(sizes, dim=1)
        # A frozen tensor is read detached: its gradient is 0, so no optimizer moves it (see decay_mask).
        self._views = {name: part.view(self.n_members, *s.shape) if s.trainable else part.detach().view(self.n_members, *s.shape)
                       for (name, s), part in zip(self.slots.items(), parts)}
        self.step, self.noise.step = step, step.key
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._views, self.step = None, NO_STEP

    def unreached(self) -> list[tuple[int, int, int]] | None:
        """After a training backward: (member, offset, size) of the tensors its forward did not reach, which the
        optimizer leaves as they were; None: the stacked paths reach the same tensors every step (those a forward
        never uses are frozen when the population is built)."""
        return None

    def kernel_mask(self) -> torch.Tensor:
        """A [P] float mask: 1 on kernel entries, 0 on biases."""
        mask = torch.zeros(self.size)
        for s in self.slots.values():
            if s.kernel:
                mask[s.offset : s.offset + s.size] = 1.0
        return mask

    def decay_mask(self, on: str) -> torch.Tensor | None:
        """A [P] float mask of the entries weight decay applies to: the kernels (`on="kernels"`: no biases, norm
        parameters or 0/1-dim tensors) or every trainable entry (`"all"`; None when that is every entry). A frozen
        tensor never decays."""
        if on == "kernels":
            return self.kernel_mask()
        if all(s.trainable for s in self.slots.values()):
            return None
        mask = torch.ones(self.size)
        for s in self.slots.values():
            if not s.trainable:
                mask[s.offset : s.offset + s.size] = 0.0
        return mask

    @torch.no_grad()
    def initialize(self, seeds: list[int], scheme: str, used: np.ndarray | None = None) -> None:
        """Draw each member's parameters from its own seeded generator, independent of E.

        `used` [E, d] marks the input columns that take a value in each member's training rows (a category
        of the file that the member never trains on has none). The first layer is drawn as if the unused
        columns did not exist and their weights are 0, which they stay (their gradient is 0): a member's
        training depends on its training rows only, not on values that occur only in its test rows.
        """
        assert len(seeds) == self.n_members
        self.noise = MemberNoise(seeds, self.flat.device)
        for e, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            keep = None if used is None or used[e].all() else torch.from_numpy(np.asarray(used[e], dtype=bool))
            for s in self.slots.values():
                if keep is not None and s.reads_inputs:
                    fan_in = int(keep.sum())
                    rows = s.shape[0] if s.kernel else None
                    drawn = _draw(replace(s, shape=(fan_in, *s.shape[1:]) if rows else s.shape, fan_in=fan_in),
                                  scheme, g)
                    if rows:
                        full = torch.zeros(s.shape)
                        full[keep] = drawn
                        drawn = full
                else:
                    drawn = _draw(s, scheme, g)
                self.flat[e, s.offset : s.offset + s.size] = drawn.flatten()

    def parameters_per_member(self) -> int:
        return self.size

    def per_row_loss(self, criterion, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                     step: Step = NO_STEP) -> torch.Tensor:
        """[E, B] training loss of each row (a model with a loss of its own, such as a mixture, overrides this)."""
        return criterion(self(x, mask, step=step), y)

    def test_extras(self, outputs, rows: list[np.ndarray]) -> dict:
        """What results.json reports of this kind of model beyond the metrics (a mixture: its experts' usage), from
        `outputs(fn)`: fn's [E, max rows, ...] output on each member's test rows `rows`, padded; none by default."""
        return {}

    def extra_metrics(self) -> list[str]:
        """Validation metrics this kind of model adds to the loss and the task metric (a mixture: each expert's
        share of the gate); none by default."""
        return []

    def extra_sums(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """[E, len(extra_metrics())] weighted sums over x's rows (weights w [E, B]) of the extra metrics, which
        validation divides by the weights' sum; None where there are none."""
        return None

    def macs_per_row(self) -> int:
        """Multiply-adds of one member's forward pass on one row (dense layers: about one per parameter)."""
        return self.size

    def macs_per_step(self, rows: int) -> int:
        """Multiply-adds of the whole population's forward pass on `rows` rows each: what sizes a step's threads
        and workers (engine/device.py)."""
        return self.n_members * self.macs_per_row() * rows


def _draw(s: Slot, scheme: str, g: torch.Generator) -> torch.Tensor:
    if s.name.startswith("norm:") or re.fullmatch(r"norm\d+\.(weight|bias)", s.name):  # a norm: scale 1, shift 0
        return torch.ones(s.shape) if s.name.endswith(".weight") else torch.zeros(s.shape)
    # "default" is torch.nn.Linear's rule (U(±1/sqrt(fan_in)) for kernel and bias);
    # glorot and he follow Keras: kernels drawn, biases zero.
    if scheme == "default":
        bound = 1.0 / math.sqrt(s.fan_in) if s.fan_in > 0 else 0.0
        return (torch.rand(s.shape, generator=g) * 2 - 1) * bound
    if not s.kernel:
        return torch.zeros(s.shape)
    if scheme == "glorot":
        bound = math.sqrt(6.0 / (s.fan_in + s.fan_out))
        return (torch.rand(s.shape, generator=g) * 2 - 1) * bound
    if scheme == "he":
        return torch.randn(s.shape, generator=g) * math.sqrt(2.0 / s.fan_in)
    raise ValueError(f"unknown init scheme {scheme!r}")
