"""Per-member random numbers that do not depend on the population: counter-based, keyed by each member's seed.

A value is a hash of (member seed, training step, stream, position in the member's tensor), so a member draws
the same dropout masks and augmentation noise whether it trains alone or beside any other members, on any
device, in one call for the whole population.
"""

import copy
import functools
import math

import numpy as np
import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_C1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_C2 = -7723592293110705685  # 0x94D049BB133111EB


_MASK = (1 << 64) - 1
_GOLDEN32 = -1640531527  # 0x9E3779B9
_M1, _M2 = -2048144789, -1028477387  # murmur3's fmix32 multipliers 0x85EBCA6B, 0xC2B2AE35
_INT32_MIN = -(1 << 31)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (integer arithmetic wraps modulo 2**64)."""
    x = x ^ _shr(x, 30)
    x = x * _C1
    x = x ^ _shr(x, 27)
    x = x * _C2
    return x ^ _shr(x, 31)


def mix_int(x: int) -> int:
    """`mix` of one Python integer, as the signed int64 torch would hold."""
    x &= _MASK
    x ^= x >> 30
    x = (x * _C1) & _MASK
    x ^= x >> 27
    x = (x * _C2) & _MASK
    x ^= x >> 31
    return x - (1 << 64) if x >> 63 else x


@functools.lru_cache(maxsize=64)
def _positions(n: int, device: str) -> torch.Tensor:
    """The hash offsets of a tensor's n positions, [n] (kept: every step draws the same shapes)."""
    return torch.arange(n, dtype=torch.int64, device=device) * _GOLDEN


def draw_key(keys: torch.Tensor, step: int, stream: int) -> torch.Tensor:
    """The key of one step's draws from one stream, for each member's key in `keys` (any shape)."""
    return mix(keys + mix_int((step * 1024 + stream) * _GOLDEN))


def bits_at(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """[*key.shape, *shape] int64 hashes of every position of a tensor of `shape` under each key."""
    position = _positions(math.prod(shape), str(key.device))
    return mix(key.unsqueeze(-1) + position).view(*key.shape, *shape)


@functools.lru_cache(maxsize=64)
def _positions32(n: int, device: str) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int32, device=device) * _GOLDEN32


def draw_key_int(key: int, step: int, stream: int) -> int:
    """`draw_key` of one member's key on the host (a signed 64-bit integer)."""
    return mix_int(key + mix_int((step * 1024 + stream) * _GOLDEN))


def draw_key32(key: int, step: int, stream: int) -> int:
    """`draw_key` of one member's key on the host, as the int32 `dropout_scale` hashes with: its low 32 bits, signed."""
    low = draw_key_int(key, step, stream) & 0xFFFFFFFF
    return low - (1 << 32) if low >> 31 else low


DROPOUT_CHUNK = 1 << 16  # values hashed at a time: their int32 temporaries stay in a CPU's L2 cache
AHEAD_BYTES = 1 << 22  # at most this much of one dropout layer's masks drawn ahead for the steps to come (plan)


def dropout_scale(key: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """Inverted dropout's float32 masks [*key.shape, *shape] under each step key: 1/(1-p) where a value is kept, 0
    where it is dropped. A value is kept where its draw u (the top 24 bits of murmur3's 32-bit finalizer over
    key + position, as a fraction) is at least p, compared as integers: u >= float32(p) exactly when its 24 bits
    are at least T = ceil(float32(p)·2**24), that is when all 32 bits are at least T·256 as an unsigned number.
    DROPOUT_CHUNK values at a time, in place, so that each chunk's passes run in cache. On the CPU the hash runs in
    numpy, whose uint32 has logical shifts and wrapping products (torch's int32 needs a mask after every shift): the
    same masks in 11 passes over a chunk instead of 16 (measured on a [5, 32, 4, 29, 29] attention mask, 1 CPU
    thread: 0.83 ms against 1.86 ms; over the model zoo's FT-Transformer fit, 0.23 s of masks against 0.35 s). Not
    for use inside vmap (it writes into the masks it returns)."""
    if p >= 1:  # torch's dropout with p = 1: every value dropped
        return torch.zeros(*key.shape, *shape, device=key.device)
    keys = (key if key.dtype == torch.int32 else key.to(torch.int32)).unsqueeze(-1)
    if keys.device.type == "cpu":
        return _host_scale(keys.numpy(), shape, p)
    return _torch_scale(keys, math.prod(shape), _cut(p), p).view(*key.shape, *shape)


def _cut(p: float) -> int:
    """A value is kept where its unsigned 32-bit hash is at least this (`dropout_scale`)."""
    return math.ceil(float(np.float32(p)) * (1 << 24)) * 256


def _host_scale(keys: np.ndarray, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """`dropout_scale` under int32 keys [..., 1] held in numpy, p < 1, hashed in numpy."""
    n = math.prod(shape)
    keys = keys.view(np.uint32)
    positions = _numpy_positions(n)
    out = np.empty((*keys.shape[:-1], n), dtype=np.float32)
    per = max(1, DROPOUT_CHUNK // keys.size)
    x = np.empty((*keys.shape[:-1], min(per, n)), dtype=np.uint32)
    kept = np.empty(x.shape, dtype=bool)
    scale, cut = np.float32(1.0 / (1.0 - p)), np.uint32(_cut(p))
    m1, m2 = np.uint32(_M1 & 0xFFFFFFFF), np.uint32(_M2 & 0xFFFFFFFF)
    for start in range(0, n, per):
        stop = min(start + per, n)
        h, k = x[..., : stop - start], kept[..., : stop - start]
        np.add(keys, positions[start:stop], out=h)
        h ^= h >> 16
        h *= m1
        h ^= h >> 13
        h *= m2
        h ^= h >> 16
        np.greater_equal(h, cut, out=k)
        np.multiply(k, scale, out=out[..., start:stop])
    return torch.from_numpy(out).view(*keys.shape[:-1], *shape)


def _torch_scale(keys: torch.Tensor, n: int, cut: int, p: float) -> torch.Tensor:
    """`dropout_scale`'s masks [*keys.shape[:-1], n] from int32 keys [..., 1], on their device."""
    threshold = cut + _INT32_MIN  # the cut as a signed number, against hashes xor'ed with the sign bit below
    positions = _positions32(n, str(keys.device))
    out = torch.empty(*keys.shape[:-1], n, device=keys.device)
    per = max(1, DROPOUT_CHUNK // keys.numel())
    for start in range(0, n, per):
        x = keys + positions[start : start + per]
        for shift, multiplier in ((16, _M1), (13, _M2), (16, None)):  # x ^= x >>> shift; x *= multiplier
            x ^= (x >> shift).bitwise_and_((1 << (32 - shift)) - 1)
            if multiplier is not None:
                x *= multiplier
        x ^= _INT32_MIN  # as a signed number, the unsigned one less 2**31: signed order is then unsigned order
        if threshold > _INT32_MIN:  # p > 0: 1 where kept, 0 where dropped (a float times a bool is torch's slow
            x.clamp_(threshold - 1, threshold).sub_(threshold - 1)  # mixed-type path, forward and backward)
        else:
            x.fill_(1)
        torch.mul(x, 1.0 / (1.0 - p), out=out[..., start : start + per])
    return out


@functools.lru_cache(maxsize=64)
def _numpy_positions(n: int) -> np.ndarray:
    """`_positions32` as uint32, for `_host_scale`."""
    return np.arange(n, dtype=np.uint32) * np.uint32(_GOLDEN32 & 0xFFFFFFFF)


class MemberNoise:
    """Uniform and normal draws [E, *shape] for E members, each from its own seed's stream."""

    def __init__(self, seeds, device=None):
        self.keys = mix(torch.as_tensor(list(seeds), dtype=torch.int64, device=device) * _GOLDEN + 1)
        self._host: tuple[torch.Tensor, list[int]] | None = None  # (keys, keys.tolist()) for `dropout_scale`
        self.step = 0  # the pass's key: Population.__call__ sets it from its Step (models/stacked.py)
        self.upcoming = range(0)  # the training steps to come (`plan`)
        self._ahead: dict = {}  # (shape, stream, p) -> (its first step, masks [steps, E, *shape] drawn together)

    def plan(self, steps: range) -> None:
        """The step keys the training loop runs next (an epoch's, in order): each dropout layer draws its masks for
        the steps to come at its first call, in one pass, and the next steps read theirs. The same masks (each is
        a function of its member, step and stream); one pass over several steps' masks runs in cache, where a
        step's own, between the layers of its forward, did not (measured on the model zoo's rtdl ResNet: two
        dropout layers' masks were a fifth of its stacked step)."""
        self.upcoming, self._ahead = steps, {}

    def at(self, step: int) -> "MemberNoise":
        """These streams at step `step` (the keys shared)."""
        out = copy.copy(self)
        out.step = step
        return out

    def select(self, keep: torch.Tensor) -> None:
        """Keep the members where the bool mask `keep` [E] is true."""
        self.keys = self.keys[keep]

    def state_dict(self) -> dict:
        return {"keys": self.keys}

    def load_state_dict(self, state: dict) -> None:
        self.keys = state["keys"]

    def to(self, device) -> "MemberNoise":
        self.keys = self.keys.to(device)
        return self

    def bits(self, shape: tuple[int, ...], stream: int) -> torch.Tensor:
        """[E, *shape] int64 hashes for this step and `stream`."""
        return bits_at(draw_key(self.keys, self.step, stream), shape)

    def dropout_scale(self, shape: tuple[int, ...], stream: int, p: float) -> torch.Tensor:
        """[E, *shape] inverted dropout masks for this step and `stream`: each value kept (1/(1-p)) with probability
        1 - p, else 0; within the planned steps, drawn ahead (`plan`). The steps' keys are drawn on the host, where
        E integers take a few microseconds and a dozen tensor operations on [E] took a fifth of a dropout layer's
        time."""
        if self._host is None or self._host[0] is not self.keys:  # new members' keys: nothing drawn ahead holds
            self._host, self._ahead = (self.keys, self.keys.tolist()), {}
        layer = (shape, stream, p)
        first, masks = self._ahead.get(layer, (0, None))
        if masks is not None and first <= self.step < first + len(masks):
            return masks[self.step - first]
        steps = [self.step]
        if self.step in self.upcoming:
            each = len(self._host[1]) * math.prod(shape) * 4
            steps = range(self.step, self.step + max(1, min(self.upcoming.stop - self.step, AHEAD_BYTES // each)))
        keys = np.array([[draw_key32(k, step, stream) for k in self._host[1]] for step in steps], dtype=np.int32)
        if self.keys.device.type == "cpu" and p < 1:  # hashed where the keys are: no tensor on the way
            masks = _host_scale(keys[..., None], shape, p)
        else:
            masks = dropout_scale(torch.from_numpy(keys).to(self.keys.device, non_blocking=True), shape, p)
        if len(steps) > 1:
            self._ahead[layer] = (self.step, masks)
        return masks[0]

    def uniform(self, shape: tuple[int, ...], stream: int) -> torch.Tensor:
        """[E, *shape] float32 uniform in [0, 1), 24 random bits each."""
        return _shr(self.bits(shape, stream), 40).float() * (1.0 / (1 << 24))

    def normal(self, shape: tuple[int, ...], stream: int) -> torch.Tensor:
        """[E, *shape] standard normal draws (Box–Muller on two uniforms from distinct streams)."""
        u1 = 1.0 - self.uniform(shape, 2 * stream + 512)  # (0, 1]: log is finite
        u2 = self.uniform(shape, 2 * stream + 513)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
