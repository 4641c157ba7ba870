"""model=module: the user's own nn.Module class (model.target, built with model.args) as a population.

The class is found by its import path, or among the classes handed to runner from Python (runner.train(model=Net)).
It is built once as a template with `args`, plus `input_shape` and `out_features` where its __init__ takes them;
each nn.Dropout and nn.BatchNorm1d/2d in it becomes runner's per-member one (functional.own_layers), and the output
for two rows must be [2, out_features]. A forward torch.fx can follow trains on the stacked fast path (models/fast.py),
anything vmap can run through the generic path (vmap of functional_call), anything else with its members in turn
(models/looped.py); `model.path` forces one, and the population's `path` says which it took and why (the run's
header shows it). Member e is the class built under torch.manual_seed(member e's seed): its own initialization.
"""

import copy
import inspect
import warnings
from typing import Callable

import torch
from torch import nn

from runner import user_code
from runner.config.schema import ModelConfig, name_of
from runner.errors import RunnerError
from runner.models import fast
from runner.models.functional import FunctionalPopulation, own_layers, seeded
from runner.models.looped import LoopPopulation

# The keyword arguments runner passes a class that takes them: what the data gives.
SHAPE_ARGS = ("input_shape", "out_features")
# A class that takes this gets the table's categorical columns as integer codes (dataset.encoding=auto), and
# each one's number of codes in model.args: [categories + 1, ...], the last code a value never seen.
CARDINALITIES = "cat_cardinalities"


def takes(cfg: ModelConfig, argument: str) -> bool:
    """Whether model=module's class names `argument` in its __init__ (not through **kwargs alone)."""
    return cfg.name == "module" and argument in inspect.signature(load_class(cfg.target)).parameters

def load_class(target: str | None) -> type:
    """The nn.Module class at `target`; one line otherwise."""
    if not target:
        raise RunnerError("model=module needs model.target=package.module:Class (your nn.Module class)")
    return user_code.load(target, "model.target", lambda obj: isinstance(obj, type) and issubclass(obj, nn.Module),
                          "an nn.Module class")


def give(cls: type) -> str:
    """Make a class passed from Python buildable by model=module; returns its path for model.target."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise RunnerError(f"model={cls!r} is not a torch.nn.Module class; pass the class itself, e.g. model=Net")
    return user_code.give(cls)


def build_template(cfg: ModelConfig, input_shape: tuple[int, ...], d_out: int) -> tuple[nn.Module, Callable]:
    """One copy of the user's module, built and checked (its output is [rows, d_out]), and a function that builds
    it anew, as each member is built."""
    cls = load_class(cfg.target)
    kwargs = dict(cfg.args or {})
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    given = {"input_shape": tuple(input_shape), "out_features": d_out}
    for name in SHAPE_ARGS:
        if name not in kwargs and (name in params or takes_any):
            kwargs[name] = given[name]
    try:
        template = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 (the user's constructor: any failure is theirs to fix)
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise RunnerError(f"model.target={cfg.target}: {cls.__name__}({shown}) failed: {type(exc).__name__}: "
                          f"{exc} (set model.args)") from None
    _check_output(template, cfg.target, input_shape, d_out)
    return template, lambda: cls(**kwargs)


def build(cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int) -> FunctionalPopulation:
    """The population of the user's class on the path it can take (the module's docstring); the caller's random
    generators are left as they were (the template is built, and probed, under a seed of its own)."""
    with seeded(0):
        return _build(cfg, members, input_shape, d_out)


def _build(cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int) -> FunctionalPopulation:
    template, make = build_template(cfg, input_shape, d_out)
    wanted = name_of(cfg.path)
    steps, why = fast.plan(template, input_shape) if wanted in ("auto", "fast") else (None, f"model.path={wanted}")
    draws = _draws(template, input_shape)
    if wanted == "auto" and (draws or _mixes_rows(template, input_shape)):
        # Random numbers: vmap cannot draw each member's alone. Rows that mix: a stacked member's batch ends in
        # padding rows (it trains on fewer rows than another); in turn it runs on its own rows alone, as PyTorch
        # would (runner's batch norm masks the padding itself).
        steps, wanted = None, "loop"
        why = ("its forward draws random numbers (each member's from its own seed and step)" if draws else
               "its forward mixes a batch's rows (a statistic over them)")
    if steps is not None and (own := _member_buffers(template, make, input_shape)):
        steps, why = None, f"it keeps a tensor in a buffer ({own[0]}) that each member holds its own of"
    unused = _unused(template, cfg.target, input_shape)
    own_layers(template, f"model.target={cfg.target}")  # runner's dropout and batch norm, by the same names
    if steps is None and wanted == "fast":
        raise RunnerError(f"model.target={cfg.target} cannot take the stacked fast path: {why} "
                          "(set model.path=auto to train it through vmap)")
    refused = None
    if steps is None:
        refused = _vmap_refuses(make, cfg.target, input_shape, d_out) if wanted in ("auto", "vmap") else None
        if refused and wanted == "vmap":
            raise RunnerError(f"model.target={cfg.target} cannot take the vmap path: {refused} (set model.path=auto "
                              "to train its members in turn)")
    in_turn = steps is None and (wanted == "loop" or refused is not None)
    if unused and not in_turn:  # the stacked paths run one graph, whatever the values: the same tensors every step
        for name in unused:
            template.get_parameter(name).requires_grad_(False)
    if steps is not None:
        population, path = fast.FastPopulation(template, members, d_out, steps, make), why
    elif in_turn:
        population, path = LoopPopulation(template, members, d_out, make), f"members in turn: {refused or why}"
    else:
        population, path = FunctionalPopulation(template, members, d_out, make), f"generic vmap path: {why}"
    if unused and not in_turn:
        shown = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
        path += (f"; {len(unused)} tensor{'s' * (len(unused) > 1)} its forward never uses stay as built ({shown}), "
                 "as torch.optim skips a parameter with no gradient")
    population.path = path
    population.draws = draws
    return population


def _member_buffers(template: nn.Module, make: Callable, input_shape: tuple[int, ...]) -> list[str]:
    """The module's buffers (batch norm's aside) that differ by member: drawn differently under two seeds, or
    changed by a training forward. The fast path's layers read the template's; the other paths each member's."""
    names = [name for name, _ in template.named_buffers()
             if not isinstance(template.get_submodule(name.rpartition(".")[0]), nn.modules.batchnorm._BatchNorm)]
    if not names:
        return []
    built = []
    for seed in (0, 1):
        with seeded(seed):
            built.append(dict(make().named_buffers()))
    probe = copy.deepcopy(template).train()
    try:
        with torch.no_grad():
            probe(torch.zeros(2, *input_shape))
    except Exception:  # noqa: BLE001 (fails in training too, named there)
        pass
    after = dict(probe.named_buffers())
    before = dict(template.named_buffers())
    return [name for name in names
            if not torch.equal(built[0][name], built[1][name]) or not torch.equal(before[name], after[name])]


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


def _draws(template: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether a training forward draws from torch's random generator (outside runner's dropout): the same rows
    from the same state under two seeds give two outputs (the caller's generators come back as they were)."""
    probe, rows = _train_probe(template), _probe_rows(input_shape)
    outs = []
    try:
        for seed in (0, 1):
            with seeded(seed), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outs.append(copy.deepcopy(probe)(rows))
    except Exception:  # noqa: BLE001 (a forward that fails here fails in training too, named there)
        return False
    return not torch.equal(outs[0], outs[1])


def _mixes_rows(template: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether a training forward's output for a row depends on the batch's other rows: three rows at once against
    each alone, from the same state (batch norm and dropout, which runner runs per member, in eval mode). A module
    that cannot run one row at a time is taken as not mixing them."""
    probe, rows = _train_probe(template), _probe_rows(input_shape)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a statistic over one row (std's degrees of freedom): the user's own
            together = copy.deepcopy(probe)(rows)
            alone = torch.cat([copy.deepcopy(probe)(rows[i : i + 1]) for i in range(len(rows))])
        return not torch.allclose(together.float(), alone.float(), rtol=1e-4, atol=1e-5)
    except Exception:  # noqa: BLE001 (a forward that refuses one row: nothing known)
        return False


def _unused(template: nn.Module, target: str, input_shape: tuple[int, ...]) -> list[str]:
    """The trainable parameters a training forward of two rows never reaches (no gradient at all): a layer built
    but not called. torch.optim skips such a parameter (no weight decay, no momentum); runner keeps it as built."""
    probe = copy.deepcopy(template).train()
    trainable = {name: p for name, p in probe.named_parameters() if p.requires_grad}
    try:
        out = probe(torch.zeros(2, *input_shape))
        if not out.requires_grad:
            raise RunnerError(f"model.target={target}: its forward uses none of its parameters, so there is "
                              "nothing to train; return values computed with its layers")
        grads = torch.autograd.grad(out.float().sum(), list(trainable.values()), allow_unused=True)
    except RunnerError:
        raise
    except Exception:  # noqa: BLE001 (a training pass the user's module refuses here fails in training, named there)
        return []
    return [name for name, g in zip(trainable, grads) if g is None]


def _vmap_refuses(make: Callable, target: str, input_shape: tuple[int, ...], d_out: int) -> str | None:
    """Why vmap cannot run the module (a layer with no batching rule, such as nn.LSTM; a forward that branches on
    its values or reads them on the host), found by one training step of a one-member population; None if it can."""
    probe = FunctionalPopulation(own_layers(make(), f"model.target={target}"), 1, d_out)
    try:
        probe(torch.zeros(1, 2, *input_shape)).sum().backward()
    except Exception as exc:  # noqa: BLE001 (whatever vmap refuses, the members can still run in turn)
        first = " ".join(str(exc).split())
        return f"vmap cannot run its forward ({type(exc).__name__}: {first[:80]}{'...' * (len(first) > 80)})"
    return None


def _check_output(template: nn.Module, target: str, input_shape: tuple[int, ...], d_out: int) -> None:
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
