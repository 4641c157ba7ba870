"""Training-batch augmentation for a population, batched on the device, every draw from the member's own streams.

Per-example parameters (shifts, flips, angles, mixup/cutmix weights, partners and patches) come from each
member's own numpy generator, drawn once per epoch for that member's own steps; elementwise noise comes from
its counter-based stream (models/noise.py). So a member is augmented the same whether it trains alone or in
any population, and validation and test rows are never augmented (only the training step calls this).
"""

import numpy as np
import torch
import torch.nn.functional as F

from runner.config.schema import AugConfig
from runner.engine.state import rng_states, rngs_from
from runner.errors import RunnerError

NOISE_STREAM = 900  # the model's dropout uses small stream numbers; input noise keeps clear of them


class Augmenter:
    """Augments the [E, B, ...] training inputs and mixes targets (soft targets for mixup and cutmix)."""

    def __init__(self, cfg: AugConfig, seeds: list[int], input_shape: tuple[int, ...], classes: int, device):
        self.cfg, self.classes, self.device = cfg, classes, device
        self.image = len(input_shape) == 3
        self.size = tuple(input_shape[1:]) if self.image else (1, 1)
        geometric = cfg.shift > 0 or cfg.flip or cfg.rotate > 0
        if (geometric or cfg.cutmix > 0) and not self.image:
            used = [k for k in ("shift", "flip", "rotate", "cutmix") if getattr(cfg, k)]
            raise RunnerError(f"aug.{used[0]} applies to images; this dataset's rows are {list(input_shape)} "
                              "(use aug.noise or aug.mixup for tables)")
        self.geometric = geometric
        self.mixing = cfg.mixup > 0 or cfg.cutmix > 0
        self.active = geometric or self.mixing or cfg.noise > 0
        self.rngs = [np.random.default_rng([int(seed), 7]) for seed in seeds]  # apart from the shuffle stream
        self.draws: dict[str, torch.Tensor] = {}
        self.cuts = np.zeros(0, bool)  # [steps]: some member's step cuts a patch (host copy of draws["cut"])

    def select(self, keep: torch.Tensor) -> None:
        """Keep the members where the bool mask `keep` [E] is true."""
        self.rngs = [rng for rng, k in zip(self.rngs, keep.tolist()) if k]

    def state_dict(self) -> dict:
        return {"rngs": rng_states(self.rngs)}

    def load_state_dict(self, state: dict) -> None:
        self.rngs = rngs_from(state["rngs"])

    def new_epoch(self, real: np.ndarray) -> None:
        """Draw the epoch's parameters; real [steps, E, B] bool marks each member's real (unpadded) rows."""
        steps, E, B = real.shape
        out = {name: np.zeros((E, steps) + shape, dtype) for name, shape, dtype in self._fields(B)}
        for e, rng in enumerate(self.rngs):
            counts = real[:, e].sum(1)
            own = int((counts > 0).sum())  # the member's own steps: the draws do not depend on the population's
            for s in range(own):
                self._draw(rng, {k: v[e, s] for k, v in out.items()}, int(counts[s]))
        self.draws = {k: torch.from_numpy(v).transpose(0, 1).contiguous().to(self.device) for k, v in out.items()}
        # On the host, which steps cut a patch for some member: the step branches on it without reading the device.
        self.cuts = out["cut"][..., 0].any(0) if self.mixing else np.zeros(steps, bool)

    def _fields(self, B: int):
        yield "partner", (B,), np.int64
        if self.geometric:
            yield "affine", (B, 2, 3), np.float32
        if self.mixing:
            yield "lam", (1,), np.float32  # one weight and one choice per member and step
            yield "cut", (1,), np.bool_
            yield "box", (4,), np.float32

    def _draw(self, rng: np.random.Generator, d: dict, n: int) -> None:
        """One step's parameters for one member with n real rows (in place into the views `d`)."""
        c = self.cfg
        d["partner"][:] = np.arange(len(d["partner"]))
        if self.geometric:
            shift = rng.integers(-c.shift, c.shift + 1, size=(n, 2)) if c.shift else np.zeros((n, 2))
            flip = rng.random(n) < 0.5 if c.flip else np.zeros(n, bool)
            angle = np.deg2rad(rng.uniform(-c.rotate, c.rotate, n)) if c.rotate else np.zeros(n)
            d["affine"][:n] = _affine(shift, flip, angle, self.size)
            d["affine"][n:] = np.eye(2, 3)  # padding rows: identity
        if self.mixing:
            cut = c.cutmix > 0 and (c.mixup == 0 or rng.random() < 0.5)
            alpha = c.cutmix if cut else c.mixup
            d["lam"][0] = rng.beta(alpha, alpha)
            d["cut"][0] = cut
            d["partner"][:n] = rng.permutation(n)  # a partner among the member's real rows of this batch
            if cut:
                d["box"][:] = rng.random(2).tolist() + [0.0, 0.0]  # the patch centre, as fractions of H and W

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment step `step`'s inputs x [E, B, ...] and targets y [E, B]; returns (x, targets), targets soft
        ([E, B, K] class probabilities for CE, [E, B] mixed values otherwise) when rows were mixed."""
        if self.geometric:
            x = self._geometric(x, self.draws["affine"][step])
        if self.cfg.noise > 0:
            x = x + self.cfg.noise * noise.normal(tuple(x.shape[1:]), NOISE_STREAM)
        if self.mixing:
            x, y = self._mix(x, y, step)
        return x, y

    def _geometric(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        E, B, C, H, W = x.shape
        flat = x.reshape(E * B, C, H, W)
        grid = F.affine_grid(theta.reshape(E * B, 2, 3), list(flat.shape), align_corners=False)
        # Zero padding in standardized units: pixels shifted in take the member's mean value.
        return F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view_as(x)

    def _mix(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        E, B = x.shape[:2]
        partner = self.draws["partner"][step]  # [E, B]
        lam, cut = self.draws["lam"][step, :, 0], self.draws["cut"][step, :, 0]  # [E]
        other = torch.gather(x, 1, partner.view(E, B, *[1] * (x.dim() - 2)).expand_as(x))
        shape = (E,) + (1,) * (x.dim() - 1)
        weight = lam.view(shape).expand(E, *[1] * (x.dim() - 1)).clone()
        if self.image and self.cuts[step]:
            patch, area = _patches(self.draws["box"][step], lam, x.shape[-2:])  # [E, H, W], [E]
            keep = torch.where(cut.view(E, 1, 1), 1.0 - patch, 1.0).view(E, 1, 1, *x.shape[-2:])
            lam = torch.where(cut, 1.0 - area, lam)
            mixed = x * keep + other * (1.0 - keep)
            blend = x * weight + other * (1.0 - weight)
            x = torch.where(cut.view(shape), mixed, blend)
        else:
            x = x * weight + other * (1.0 - weight)
        if y.dim() == 3:  # soft targets already (distillation): mix them as they are
            y_other = torch.gather(y, 1, partner.unsqueeze(-1).expand_as(y))
            return x, lam.view(E, 1, 1) * y + (1.0 - lam.view(E, 1, 1)) * y_other
        y_other = torch.gather(y, 1, partner)
        if self.classes:
            hard = F.one_hot(y.long(), self.classes).float()
            soft_other = F.one_hot(y_other.long(), self.classes).float()
            return x, lam.view(E, 1, 1) * hard + (1.0 - lam.view(E, 1, 1)) * soft_other
        return x, lam.view(E, 1) * y + (1.0 - lam.view(E, 1)) * y_other


def _affine(shift: np.ndarray, flip: np.ndarray, angle: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[n, 2, 3] affine_grid matrices (output -> input coordinates in [-1, 1]): mirror (flip), rotate by
    `angle` radians, then translate by `shift` [n, 2] whole pixels (rows, columns)."""
    H, W = size
    cos, sin = np.cos(angle), np.sin(angle)
    sx = np.where(flip, -1.0, 1.0)
    theta = np.zeros((len(angle), 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sx, -sin, 2.0 * shift[:, 1] / W
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * sx, cos, 2.0 * shift[:, 0] / H
    return theta


def _patches(box: torch.Tensor, lam: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix patches [E, H, W] (1 inside) with side sqrt(1 - lam) of the image, centred at box[:, :2]
    (fractions of H and W), clipped at the border; and each patch's area as a fraction of the image."""
    H, W = size
    side = torch.sqrt(1.0 - lam)
    cy, cx = box[:, 0] * H, box[:, 1] * W
    half_h, half_w = (side * H / 2), (side * W / 2)
    y0, y1 = (cy - half_h).round().clamp(0, H), (cy + half_h).round().clamp(0, H)
    x0, x1 = (cx - half_w).round().clamp(0, W), (cx + half_w).round().clamp(0, W)
    rows = torch.arange(H, device=box.device).view(1, H, 1)
    cols = torch.arange(W, device=box.device).view(1, 1, W)
    patch = ((rows >= y0.view(-1, 1, 1)) & (rows < y1.view(-1, 1, 1))
             & (cols >= x0.view(-1, 1, 1)) & (cols < x1.view(-1, 1, 1))).float()
    return patch, patch.sum((1, 2)) / (H * W)

