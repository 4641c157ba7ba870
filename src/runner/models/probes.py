"""What a user's module does, found by running copies of it before training: its output, the tensors its forward
never reaches, whether it draws random numbers or mixes a batch's rows, which buffers differ by member, and whether
vmap can run it. models/module.py chooses the population's path from these."""

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from runner.errors import RunnerError
from runner.models.functional import FunctionalPopulation, own_layers, seeded


@dataclass(frozen=True)
class TrainingPass:
    """What one training forward and backward of two rows does to a copy of the module."""

    written: list[str]  # parameters its forward changes in place (a max-norm clamp under no_grad)
    changed: list[str]  # buffers its forward changes (a counter, a running statistic of its own)
    unused: list[str]  # trainable parameters it never reaches (no gradient at all): a layer built but not called


def training_pass(template: nn.Module, target: str, input_shape: tuple[int, ...]) -> TrainingPass:
    """One training pass of two rows of zeros on a copy of the template; one line for a forward that uses none of its
    parameters. A pass the module refuses here finds nothing (it fails in training, named there)."""
    probe = copy.deepcopy(template).train()
    versions = {name: p._version for name, p in probe.named_parameters()}  # counts in-place writes, equal values too
    buffers = {name: b.clone() for name, b in probe.named_buffers()}
    trainable = {name: p for name, p in probe.named_parameters() if p.requires_grad}
    try:
        out = probe(torch.zeros(2, *input_shape))
    except Exception:  # noqa: BLE001
        return TrainingPass([], [], [])
    written = [name for name, p in probe.named_parameters() if p._version != versions[name]]
    changed = [name for name, b in probe.named_buffers() if not torch.equal(buffers[name], b)]
    if written:
        return TrainingPass(written, changed, [])
    if not out.requires_grad:
        raise RunnerError(f"model.target={target}: its forward uses none of its parameters, so there is nothing to "
                          "train; return values computed with its layers")
    try:
        grads = torch.autograd.grad(out.float().sum(), list(trainable.values()), allow_unused=True)
    except Exception:  # noqa: BLE001
        return TrainingPass(written, changed, [])
    return TrainingPass(written, changed, [name for name, g in zip(trainable, grads) if g is None])


def refuse_parameter_writes(trained: TrainingPass, target: str) -> None:
    """One line for a forward that changes its parameters in place: runner holds every member's parameters as
    views of one tensor, which autograd does not let a forward write."""
    if trained.written:
        raise RunnerError(f"model.target={target}: its forward changes parameter {trained.written[0]} in place; "
                          "runner holds every member's parameters in one tensor, which a forward may only read: "
                          "constrain it out of place in forward (w = self.fc.weight.clamp(-1, 1), then "
                          "F.linear(x, w)) or with torch.nn.utils.parametrize")


def refuse_complex_buffers(template: nn.Module, make: Callable, target: str, trained: TrainingPass) -> None:
    """One line for a complex buffer that differs by member (drawn under the seed, or changed by a training
    forward): runner keeps each member's buffers as float32 beside the statistics. One the same for every member
    stays shared (a fixed kernel)."""
    complex_ = [name for name, b in template.named_buffers() if b.is_complex()]
    if complex_ and (varying := _varying_buffers(make, complex_, trained)):
        raise RunnerError(f"model.target={target}: buffer {varying[0]} is complex and differs by member; runner "
                          "keeps each member's buffers as real numbers: register its real and imaginary parts "
                          "(torch.view_as_real) and combine them in forward")


def member_buffers(template: nn.Module, make: Callable, trained: TrainingPass) -> list[str]:
    """The module's buffers (batch norm's aside) that differ by member: drawn differently under two seeds, or
    changed by a training forward. The fast path's layers read the template's; the other paths each member's."""
    names = [name for name, _ in template.named_buffers()
             if not isinstance(template.get_submodule(name.rpartition(".")[0]), nn.modules.batchnorm._BatchNorm)]
    return _varying_buffers(make, names, trained) if names else []


def _varying_buffers(make: Callable, names: list[str], trained: TrainingPass) -> list[str]:
    """Those of the buffers `names` that two seeds' builds draw differently or the training pass changed."""
    built = []
    for seed in (0, 1):
        with seeded(seed):
            built.append(dict(make().named_buffers()))
    return [name for name in names if name in trained.changed or not torch.equal(built[0][name], built[1][name])]


def _train_probe(template: nn.Module) -> nn.Module:
    """A copy of the template in training mode, with batch norm and dropout (which runner runs per member) in eval
    mode."""
    probe = copy.deepcopy(template).train()
    for module in probe.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            module.eval()
    return probe


def _probe_rows(input_shape: tuple[int, ...]) -> torch.Tensor:
    """Three distinct rows any input takes: zeros, ones and a random 0/1 pattern (a valid code too)."""
    g = torch.Generator().manual_seed(0)
    return torch.stack([torch.zeros(input_shape), torch.ones(input_shape),
                        torch.randint(0, 2, input_shape, generator=g).float()])


def _copies(probe: nn.Module, trained: TrainingPass):
    """A function giving the probe as it is now for each run: a copy where a forward can change it (a buffer its
    training pass changed, batch norm's aside: the probe runs batch norm in eval mode), else the probe itself."""
    keeps_state = any(not isinstance(probe.get_submodule(name.rpartition(".")[0]), nn.modules.batchnorm._BatchNorm)
                      for name in trained.changed)
    return (lambda: copy.deepcopy(probe)) if keeps_state else (lambda: probe)


def draws(template: nn.Module, input_shape: tuple[int, ...], trained: TrainingPass) -> bool:
    """Whether a training forward draws from torch's random generator (outside runner's dropout): the same rows
    from the same state under two seeds give two outputs (the caller's generators come back as they were)."""
    probe, rows = _train_probe(template), _probe_rows(input_shape)
    fresh = _copies(probe, trained)
    outs = []
    try:
        for seed in (0, 1):
            with seeded(seed), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outs.append(fresh()(rows))
    except Exception:  # noqa: BLE001 (a forward that fails here fails in training too, named there)
        return False
    return not torch.equal(outs[0], outs[1])


def mixes_rows(template: nn.Module, input_shape: tuple[int, ...], trained: TrainingPass) -> bool:
    """Whether a training forward's output for a row depends on the batch's other rows: three rows at once against
    each alone, from the same state (batch norm and dropout, which runner runs per member, in eval mode). A module
    that cannot run one row at a time is taken as not mixing them."""
    probe, rows = _train_probe(template), _probe_rows(input_shape)
    fresh = _copies(probe, trained)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a statistic over one row (std's degrees of freedom): the user's own
            together = fresh()(rows)
            alone = torch.cat([fresh()(rows[i : i + 1]) for i in range(len(rows))])
        return not torch.allclose(together.float(), alone.float(), rtol=1e-4, atol=1e-5)
    except Exception:  # noqa: BLE001 (a forward that refuses one row: nothing known)
        return False


def vmap_refuses(make: Callable, target: str, input_shape: tuple[int, ...], d_out: int) -> str | None:
    """Why vmap cannot run the module (a layer with no batching rule, such as nn.LSTM; a forward that branches on
    its values or reads them on the host), found by one training step of a one-member population; None if it can."""
    probe = FunctionalPopulation(own_layers(make(), f"model.target={target}"), 1, d_out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note of a slow batching rule: the fit says it once if it is
            probe(torch.zeros(1, 2, *input_shape)).sum().backward()
    except Exception as exc:  # noqa: BLE001 (whatever vmap refuses, the members can still run in turn)
        first = " ".join(str(exc).split())
        return f"vmap cannot run its forward ({type(exc).__name__}: {first[:80]}{'...' * (len(first) > 80)})"
    return None


def check_output(template: nn.Module, target: str, input_shape: tuple[int, ...], d_out: int) -> None:
    rows = torch.zeros(2, *input_shape)
    template.eval()
    try:
        with torch.no_grad():
            out = template(rows)
    except Exception as exc:  # noqa: BLE001 (the user's forward)
        raise RunnerError(f"model.target={target}: its forward fails on rows of shape {list(rows.shape)}: "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        template.train()
    if not any(p.requires_grad for p in template.parameters()):
        what = "no parameters" if not list(template.parameters()) else "only frozen parameters (requires_grad=False)"
        raise RunnerError(f"model.target={target}: the module has {what}, so there is nothing to train; give it at "
                          "least one trainable nn.Parameter (an nn.Linear layer, say)")
    if isinstance(out, torch.Tensor) and not out.is_floating_point():
        raise RunnerError(f"model.target={target}: its forward returns a {out.dtype} tensor; the loss needs "
                          "floating-point outputs (logits or values): return them before any rounding or .long()")
    if not isinstance(out, torch.Tensor):
        raise RunnerError(f"model.target={target}: for 2 rows of shape {list(input_shape)} its forward returns "
                          f"{_returned(out)}; forward must return one tensor, [2, {d_out}] here (return the "
                          "logits or predictions alone)")
    if tuple(out.shape) != (2, d_out):
        raise RunnerError(f"model.target={target}: for 2 rows of shape {list(input_shape)} it returns "
                          f"{list(out.shape)}; this task needs [2, {d_out}] (take out_features={d_out} in __init__)")


def _returned(out) -> str:
    """What a forward returned, in a few words: "a tuple of 2 (Tensor [2, 1], Tensor [2, 4])", "a dict with keys
    'logits', 'aux'", "None"."""
    def one(value) -> str:
        return f"Tensor {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__

    if isinstance(out, (tuple, list)):
        shown = ", ".join(one(v) for v in out[:4]) + (", ..." if len(out) > 4 else "")
        return f"a {type(out).__name__} of {len(out)} ({shown})"
    if isinstance(out, dict):
        return f"a dict with keys {', '.join(map(repr, list(out)[:6]))}" + (", ..." if len(out) > 6 else "")
    return "None" if out is None else f"a {type(out).__name__}"
