"""Where a stacked step of the model zoo's rtdl ResNet goes, one thread, on heart's shapes (5 members, 32 rows of
28 features): the stacked forward and backward beside one member's plain torch.optim Adam step, and two of the
step's parts timed alone (their tensors in cache) and inside the step (after the rest of the step has run): the
dropout masks of one layer and the backward's one concatenation of the members' gradients; beside what torch
does for one member, dropout on an FT-Transformer's attention maps (its masks hashed both ways) and a batched
matmul; and an FT-Transformer's forward and backward (dropout off) through runner's vmap path, through
torch.func.vmap itself, and one member at a time, and its forward alone both ways.

    .venv/bin/python bench/step_parts.py
"""

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

E, ROWS, FEATURES = 5, 32, 28


def best_ms(fn, repeats: int = 300, rounds: int = 3) -> float:
    """The fastest round's milliseconds per call, after warming up."""
    for _ in range(30):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats * 1e3)
    return best


class Timed:
    """Wraps a function, adding each call's seconds up."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def us(self) -> float:
        return self.seconds / max(self.calls, 1) * 1e6


def main() -> None:
    from runner.config.schema import ModelConfig
    from runner.models import build_model, stacked
    from runner.models.noise import MemberNoise
    from runner.user_code import give

    torch.set_num_threads(1)
    model = build_model(ModelConfig(name="module", target=give(zoo.RtdlResNet)), E, (FEATURES,), 2)
    model.initialize(list(range(E)), "default")
    model.train()
    x, y = torch.randn(E, ROWS, FEATURES), torch.randint(0, 2, (E, ROWS))
    step = stacked.Step(3, torch.ones(E, dtype=torch.bool), np.full(E, ROWS))

    def stacked_step():
        model.flat.grad = None
        out = model(x, step=step)
        torch.nn.functional.cross_entropy(out.reshape(-1, 2), y.reshape(-1)).backward()

    plain = zoo.RtdlResNet((FEATURES,), 2)
    opt = torch.optim.Adam(plain.parameters())

    def plain_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(plain(x[0]), y[0]).backward()
        opt.step()

    print(f"{model.path}, {E} members: forward and backward {best_ms(stacked_step):.2f} ms; "
          f"one member's plain Adam step {best_ms(plain_step):.2f} ms")

    kept = Timed(MemberNoise.dropout_scale)
    MemberNoise.dropout_scale = lambda self, *args: kept(self, *args)
    best_ms(stacked_step, repeats=100, rounds=1)
    inside = kept.us()
    noise, shape = model.noise, (ROWS, 128)
    kept.seconds = kept.calls = 0
    best_ms(lambda: noise.dropout_scale(shape, 0, 0.1), repeats=300, rounds=1)
    print(f"one dropout layer's masks {list(shape)} for {E} members: {kept.us():.0f} us alone, {inside:.0f} us "
          "inside the step")

    # The backward's concatenation: the split of `flat` replaced by one that times its backward's torch.cat.
    timing = {"inside": [], "grads": None}

    class Split(torch.autograd.Function):
        @staticmethod
        def forward(ctx, flat, sizes):
            return flat.split(sizes, 1)

        @staticmethod
        def backward(ctx, *grads):
            start = time.perf_counter()
            out = torch.cat(grads, 1)
            timing["inside"].append(time.perf_counter() - start)
            timing["grads"] = [g.clone() for g in grads]
            return out, None

    def call(self, *args, step=stacked.NO_STEP, **kwargs):
        parts = Split.apply(self.flat, [s.size for s in self.slots.values()])
        self._views = {name: part.view(self.n_members, *s.shape) for (name, s), part in zip(self.slots.items(), parts)}
        self.step, self.noise.step = step, step.key
        try:
            return torch.nn.Module.__call__(self, *args, **kwargs)
        finally:
            self._views, self.step = None, stacked.NO_STEP

    attention = (ROWS, 4, FEATURES + 1, FEATURES + 1)  # the FT-Transformer's attention maps: 4 heads, CLS + features
    scores = torch.randn(E, *attention)
    ours = best_ms(lambda: scores * noise.dropout_scale(attention, 0, 0.1), repeats=30)
    theirs = best_ms(lambda: [torch.nn.functional.dropout(m, 0.1) for m in scores], repeats=30)
    print(f"dropout on {E} members' attention maps {list(attention)}: runner's masks and product {ours:.2f} ms, "
          f"torch's dropout one member after another {theirs:.2f} ms")
    from runner.models import noise as member_noise

    keys = torch.arange(E, dtype=torch.int32).unsqueeze(-1)
    cut, size = member_noise._cut(0.1), math.prod(attention)
    host = best_ms(lambda: member_noise._host_scale(keys.numpy(), attention, 0.1), repeats=30)
    device = best_ms(lambda: member_noise._torch_scale(keys, size, cut, 0.1), repeats=30)
    print(f"those masks hashed in numpy (the CPU's way) {host:.2f} ms, in torch's int32 (other devices') "
          f"{device:.2f} ms")
    a, w, b = torch.randn(E, ROWS, 64), torch.randn(E, 128, 64), torch.randn(128)
    print(f"a batched matmul of {E} members' [{ROWS}, 64] x [64, 128]: "
          f"{best_ms(lambda: torch.bmm(a, w.transpose(1, 2))) * 1e3:.0f} us; one member's addmm "
          f"{best_ms(lambda: torch.addmm(b, a[0], w[0].t())) * 1e3:.0f} us")
    ft_parity()
    stacked.Population.__call__ = call
    best_ms(stacked_step, repeats=100, rounds=1)
    inside = np.median(timing["inside"]) * 1e6
    grads = timing["grads"]
    print(f"the backward's concatenation of {E} members' gradients ({sum(g.numel() for g in grads) * 4 / 2**10:.0f} "
          f"KiB): {best_ms(lambda: torch.cat(grads, 1)) * 1e3:.0f} us alone, {inside:.0f} us inside the backward")


class FT(zoo.RtdlFT):
    """The zoo's FT-Transformer with its dropout off (torch.func.vmap cannot draw per-member masks)."""

    def __init__(self, input_shape, out_features):
        torch.nn.Module.__init__(self)
        self.net = zoo.rtdl_ft(input_shape[0], out_features, 0.0)


def ft_parity() -> None:
    """Forward and backward of 5 FT-Transformers: runner's vmap path, torch.func.vmap over functional_call (no
    runner), and 5 times one member's own."""
    from torch.func import functional_call, vmap

    from runner.config.schema import ModelConfig
    from runner.models import build_model, stacked
    from runner.user_code import give

    model = build_model(ModelConfig(name="module", target=give(FT)), E, (FEATURES,), 2)
    model.initialize(list(range(E)), "default")
    model.train()
    x, y = torch.randn(E, ROWS, FEATURES), torch.randint(0, 2, (E, ROWS))
    step = stacked.Step(3, None, np.full(E, ROWS))

    def ours():
        model.flat.grad = None
        torch.nn.functional.cross_entropy(model(x, step=step).reshape(-1, 2), y.reshape(-1)).backward()

    one = FT((FEATURES,), 2).train()
    params = {k: v.detach().unsqueeze(0).repeat(E, *[1] * v.dim()).requires_grad_() for k, v in one.named_parameters()}

    def torch_vmap():
        out = vmap(lambda p, rows: functional_call(one, p, (rows,)))(params, x)
        torch.nn.functional.cross_entropy(out.reshape(-1, 2), y.reshape(-1)).backward()

    def alone():
        for e in range(E):
            torch.nn.functional.cross_entropy(one(x[e]), y[e]).backward()

    print(f"an FT-Transformer's forward and backward, {E} members (dropout off): runner's {model.path.split(':')[0]} "
          f"{best_ms(ours, repeats=20):.2f} ms, torch.func.vmap {best_ms(torch_vmap, repeats=20):.2f} ms, one member "
          f"after another {best_ms(alone, repeats=20):.2f} ms")

    def vmap_forward():
        return vmap(lambda p, rows: functional_call(one, p, (rows,)))(params, x)

    def alone_forward():
        return [one(x[e]) for e in range(E)]

    print(f"its forward alone: torch.func.vmap {best_ms(vmap_forward, repeats=20):.2f} ms, one member after another "
          f"{best_ms(alone_forward, repeats=20):.2f} ms")


if __name__ == "__main__":
    main()
