"""model=module: the user's own nn.Module class (model.target, built with model.args) as a population.

The class is found by its import path, or among the classes handed to runner from Python (runner.train(model=Net)).
It is built once as a template with `args`, plus `input_shape` and `out_features` where its __init__ takes them;
each nn.Dropout and nn.BatchNorm1d/2d in it becomes runner's per-member one (functional.own_layers), and the output
for two rows must be [2, out_features]. A forward torch.fx can follow trains on the stacked fast path (models/fast.py),
anything else through the generic path (vmap of functional_call); `model.path` forces one, and the population's
`path` says which it took and why (the run's header shows it).
"""

import inspect

import torch
from torch import nn

from runner import user_code
from runner.config.schema import ModelConfig, name_of
from runner.errors import RunnerError
from runner.models import fast
from runner.models.functional import FunctionalPopulation, own_layers

# The keyword arguments runner passes a class that takes them: what the data gives.
SHAPE_ARGS = ("input_shape", "out_features")

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


def build_template(cfg: ModelConfig, input_shape: tuple[int, ...], d_out: int) -> nn.Module:
    """One copy of the user's module, built and checked: its output is [rows, d_out]."""
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
    return template


def build(cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int) -> FunctionalPopulation:
    template = build_template(cfg, input_shape, d_out)
    wanted = name_of(cfg.path)
    steps, why = fast.plan(template, input_shape) if wanted != "vmap" else (None, "model.path=vmap")
    own_layers(template, f"model.target={cfg.target}")  # runner's dropout and batch norm, by the same names
    if steps is None and wanted == "fast":
        raise RunnerError(f"model.target={cfg.target} cannot take the stacked fast path: {why} "
                          "(set model.path=auto to train it through vmap)")
    if steps is None:
        population = FunctionalPopulation(template, members, d_out)
        population.path = f"generic vmap path: {why}"
    else:
        population = fast.FastPopulation(template, members, d_out, steps)
        population.path = why
    return population


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
