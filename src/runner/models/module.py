"""model=module: the user's own nn.Module class (model.target, built with model.args) as a population.

The class is found by its import path, or among the classes handed to runner from Python (runner.train(model=Net)).
It is built once as a template with `args`, plus `input_shape` and `out_features` where its __init__ takes them;
each nn.Dropout and nn.BatchNorm1d/2d in it becomes runner's per-member one (functional.own_layers), and the output
for two rows must be [2, out_features]. A forward torch.fx can follow trains on the stacked fast path (models/fast.py),
anything vmap can run through the generic path (vmap of functional_call), anything else with its members in turn
(models/looped.py), as do a forward that draws random numbers or mixes a batch's rows (models/probes.py runs
copies of it first); `model.path` forces one, and the population's `path` says which it took and why (the run's
header shows it). Member e is the class built under torch.manual_seed(member e's seed): its own initialization.
"""

import inspect
from typing import Callable

from torch import nn

from runner import user_code
from runner.config.schema import ModelConfig, name_of
from runner.errors import RunnerError
from runner.models import fast, probes
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
    probes.check_output(template, cfg.target, input_shape, d_out)
    return template, lambda: cls(**kwargs)


def build(cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int) -> FunctionalPopulation:
    """The population of the user's class on the path it can take (the module's docstring); the caller's random
    generators are left as they were (the template is built, and probed, under a seed of its own)."""
    with seeded(0):
        template, make = build_template(cfg, input_shape, d_out)
        trained = probes.training_pass(template, cfg.target, input_shape)
        probes.refuse_parameter_writes(trained, cfg.target)
        probes.refuse_complex_buffers(template, make, cfg.target, trained)
        draws = probes.draws(template, input_shape, trained)
        kind, steps, why = _path(template, make, cfg, input_shape, d_out, draws, trained)
        unused = trained.unused
    own_layers(template, f"model.target={cfg.target}")  # runner's dropout and batch norm, by the same names
    if kind == "loop":  # a forward that may branch on its values: each step says what each member's reached
        population, path = LoopPopulation(template, members, d_out, make), f"members in turn: {why}"
    else:  # one graph whatever the values: what a forward never reaches stays as built (torch.optim skips it)
        for name in unused:
            template.get_parameter(name).requires_grad_(False)
        population, path = ((fast.FastPopulation(template, members, d_out, steps, make), why) if kind == "fast" else
                            (FunctionalPopulation(template, members, d_out, make), f"generic vmap path: {why}"))
        if unused:
            shown = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
            path += (f"; {len(unused)} tensor{'s' * (len(unused) > 1)} its forward never uses stay as built "
                     f"({shown}), as torch.optim skips a parameter with no gradient")
    population.path, population.draws = path, draws
    return population


def _path(template: nn.Module, make: Callable, cfg: ModelConfig, input_shape: tuple[int, ...], d_out: int,
          draws: bool, trained: probes.TrainingPass) -> tuple[str, list | None, str]:
    """("fast", its steps, why) | ("vmap", None, why) | ("loop", None, why): the path model.path asks for, or on
    auto the fastest the module allows. Members run in turn where a stacked run would differ from each alone: a
    forward drawing random numbers (vmap cannot draw each member's alone) or mixing a batch's rows (a stacked
    member's batch ends in padding rows; in turn it runs on its own rows, as PyTorch would)."""
    wanted, where = name_of(cfg.path), f"model.target={cfg.target}"
    if wanted == "loop":
        return "loop", None, "model.path=loop"
    mixes = not draws and probes.mixes_rows(template, input_shape, trained)
    apart = ("its forward draws random numbers (each member's from its own seed and step)" if draws else
             "its forward mixes a batch's rows (a statistic over them)" if mixes else None)
    if apart and wanted != "auto":
        raise RunnerError(f"{where} cannot take the {'stacked fast' if wanted == 'fast' else 'vmap'} path: "
                          f"{apart.partition(' (')[0]} (set model.path=auto to train its members in turn)")
    if apart:
        return "loop", None, apart
    steps, why = fast.plan(template, input_shape) if wanted in ("auto", "fast") else (None, f"model.path={wanted}")
    if steps is not None and (own := probes.member_buffers(template, make, trained)):
        steps, why = None, f"it keeps a tensor in a buffer ({own[0]}) that each member holds its own of"
    if steps is not None:
        return "fast", steps, why
    if wanted == "fast":
        raise RunnerError(f"{where} cannot take the stacked fast path: {why} (set model.path=auto to train it "
                          "through vmap)")
    refused = probes.vmap_refuses(make, cfg.target, input_shape, d_out)
    if refused is None:
        return "vmap", None, why
    if wanted == "vmap":
        raise RunnerError(f"{where} cannot take the vmap path: {refused} (set model.path=auto to train its members "
                          "in turn)")
    return "loop", None, refused
