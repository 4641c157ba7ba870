"""Peak memory of one training step (forward and backward), in bytes the C allocator holds: the ResNet-18 layout
of the model zoo on 64 rows of 32x32 images, torch's own module against runner's stacked fast path for 1 and 5
members. Linux with glibc (mallinfo2), sampled after every aten op by a TorchDispatchMode.

    .venv/bin/python bench/step_memory.py
"""

import ctypes
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

ROWS = 64


class _Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Info


def allocated() -> int:
    """Bytes in use from the heap and from mmap."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class Peak(TorchDispatchMode):
    """The most bytes in use after any op, above what was in use when it started."""

    def __enter__(self):
        self.base = self.peak = allocated()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, allocated())
        return out


def step_peak_mib(step) -> float:
    step()  # the first step allocates what every later one reuses (gradients)
    with Peak() as peak:
        step()
    return (peak.peak - peak.base) / 2**20


def main() -> None:
    from runner.config.schema import ModelConfig
    from runner.models import build_model
    from runner.models.stacked import Step
    from runner.user_code import give

    torch.set_num_threads(1)
    plain = zoo.ResNet18((1, 32, 32), 10)
    x = torch.randn(ROWS, 1, 32, 32)
    print(f"torch's own module, 1 model: {step_peak_mib(lambda: plain(x).sum().backward()):.0f} MiB")
    for members in (1, 5):
        model = build_model(ModelConfig(name="module", target=give(zoo.ResNet18)), members, (1, 32, 32), 10)
        model.initialize(list(range(members)), "default")
        model.train()
        xs = torch.randn(members, ROWS, 1, 32, 32)
        step = Step(real_rows=np.full(members, ROWS))
        mib = step_peak_mib(lambda: model(xs, step=step).float().sum().backward())
        print(f"runner, {model.path}, {members} member{'s' * (members > 1)}: {mib:.0f} MiB ({mib / members:.0f} a member)")


if __name__ == "__main__":
    main()
