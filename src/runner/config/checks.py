"""What config values may be: one table of constraints checked before anything runs, and the checks
that need the data's task."""

import math
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Callable, List

from runner.config.metric_names import MONITORS, default_monitor, metric_names
from runner.config.schema import Config, ModelConfig, name_of
from runner.errors import RunnerError

_MONITORS = "choose one of " + ", ".join(MONITORS)

# Every value a schema's type cannot check: (key, test of the value and the whole config, what is allowed).
# One table, so a constraint is declared once and `validate` names the key and the fix in one line.
RULES: list[tuple[str, Callable[[Any, Config], bool], str]] = [
    ("trainer.epochs", lambda v, c: v >= 1, "use an integer >= 1"),
    ("trainer.seeds", lambda v, c: v >= 1, "use a count >= 1"),
    ("trainer.threads", lambda v, c: v is None or v >= 1, "use a count >= 1, or null for automatic"),
    ("trainer.batch_size", lambda v, c: v == "full" or (type(v) is int and v >= 1), "use an integer >= 1 or 'full'"),
    ("trainer.workers", lambda v, c: v is None or v >= 1, "use a count >= 1, or null for one per core"),
    ("trainer.stack", lambda v, c: v == "auto" or (type(v) is int and v >= 1), "use an integer >= 1 or 'auto'"),
    ("trainer.memory_gb", lambda v, c: v is None or v > 0, "use a positive number of GiB, or null (the "
     "default budget)"),
    ("dataset.size", lambda v, c: v is None or (len(v) == 2 and all(s >= 1 for s in v)),
     "use [height, width] in pixels, or null to keep the stored size"),
    ("dataset.limit", lambda v, c: v is None or v >= 1, "use a count of images, or null for all"),
    ("model.hidden", lambda v, c: all(h >= 1 for h in v), "use positive widths, e.g. [16] or [] for none"),
    ("model.dropout", lambda v, c: 0.0 <= v < 1.0, "use a probability in [0, 1)"),
    ("model.channels", lambda v, c: bool(v) and all(w >= 1 for w in v), "use positive channel counts, e.g. [16, 32]"),
    ("model.kernel", lambda v, c: v >= 1 and v % 2 == 1, "use an odd kernel size >= 1, e.g. 3"),
    ("model.groups", lambda v, c: v >= 1, "use a group count >= 1"),
    ("model.experts", lambda v, c: v >= 1, "use a count >= 1"),
    ("model.top_k", lambda v, c: v is None or 1 <= v <= c.model.experts,
     "use 1..model.experts, or null for a dense gate"),
    ("model.expert", lambda v, c: all(h >= 1 for h in v), "use positive widths, or [] for linear experts"),
    ("loss.balance", lambda v, c: v >= 0, "use a weight >= 0"),
    ("model.groups", lambda v, c: name_of(c.model.norm) != "group" or all(w % v == 0 for w in _widths(c.model)),
     "norm=group needs every layer width (model.channels for cnn, else model.hidden) divisible by model.groups"),
    ("model.norm", lambda v, c: name_of(c.model.name) != "cnn_vmap" or name_of(v) in ("none", "group"),
     "model=cnn_vmap supports model.norm=none or group (model=cnn keeps per-member batch statistics)"),
    ("aug.shift", lambda v, c: v >= 0, "use a pixel count >= 0"),
    ("aug.rotate", lambda v, c: 0 <= v <= 180, "use degrees in [0, 180]"),
    ("aug.noise", lambda v, c: v >= 0, "use a value >= 0 (0 turns it off)"),
    ("aug.mixup", lambda v, c: v >= 0, "use a value >= 0 (0 turns it off)"),
    ("aug.cutmix", lambda v, c: v >= 0, "use a value >= 0 (0 turns it off)"),
    ("optim.lr", lambda v, c: v > 0, "use a positive learning rate"),
    ("optim.weight_decay", lambda v, c: v >= 0, "use a value >= 0"),
    ("optim.betas", lambda v, c: len(v) == 2 and all(0 <= b < 1 for b in v), "use two values in [0, 1)"),
    ("optim.momentum", lambda v, c: 0 <= v < 1, "use a value in [0, 1)"),
    ("optim.dampening", lambda v, c: 0 <= v <= 1, "use a value in [0, 1]"),
    ("optim.nesterov", lambda v, c: not v or (c.optim.momentum > 0 and c.optim.dampening == 0),
     "nesterov needs optim.momentum > 0 and optim.dampening=0"),
    ("optim.eps", lambda v, c: v > 0, "use a small positive number, e.g. 1e-8"),
    ("optim.alpha", lambda v, c: 0 <= v < 1, "use a smoothing constant in [0, 1)"),
    ("optim.initial_accumulator_value", lambda v, c: v >= 0, "use a value >= 0"),
    ("sched.step_size", lambda v, c: v >= 1, "use a number of epochs >= 1"),
    ("avg.over", lambda v, c: v == "member", "weights of different members (seeds, folds or architectures) are not "
     "aligned, so they are never averaged; average the members' predictions instead (a prediction ensemble), and "
     "keep avg.over=member"),
    ("avg.k", lambda v, c: v >= 1, "use an integer >= 1"),
    ("avg.ingredients", lambda v, c: v >= 1, "use an integer >= 1"),
    ("avg.start_epoch", lambda v, c: v >= 0, "use an integer >= 0"),
    ("avg.decay", lambda v, c: 0 < v < 1, "use a value in (0, 1), e.g. 0.99"),
    ("avg.lr", lambda v, c: v is None or v > 0, "use a positive learning rate, or null"),
    ("avg.start_epoch", lambda v, c: name_of(c.avg.name) not in ("swa", "compare") or v < c.trainer.epochs,
     "SWA averages the epochs from this one on: use an epoch below trainer.epochs"),
    ("trainer.checkpoint_every", lambda v, c: v is None or v >= 1,
     "use a number of epochs >= 1, or null (about once a minute)"),
    ("sched.gamma", lambda v, c: v > 0, "use a positive factor (below 1 decays the learning rate)"),
    ("sched.eta_min", lambda v, c: 0 <= v <= c.optim.lr, "use a value in [0, optim.lr]"),
    ("sched.warmup_epochs", lambda v, c: 0 <= v < c.trainer.epochs, "use a count in [0, trainer.epochs)"),
    ("sched.warmup_steps", lambda v, c: v >= 0, "use a number of optimizer steps >= 0 (0: no warmup)"),
    ("sched.max_lr", lambda v, c: v is None or v > 0, "use a positive learning rate, or null for optim.lr"),
    ("sched.pct_start", lambda v, c: 0 < v < 1, "use a fraction in (0, 1)"),
    ("sched.div_factor", lambda v, c: v > 0, "use a positive divisor"),
    ("sched.final_div_factor", lambda v, c: v > 0, "use a positive divisor"),
    ("sched.monitor", lambda v, c: v in MONITORS, _MONITORS),
    ("sched.factor", lambda v, c: 0 < v < 1, "use a factor in (0, 1)"),
    ("sched.patience", lambda v, c: v >= 0, "use a number of epochs >= 0"),
    ("sched.threshold", lambda v, c: v >= 0, "use a relative threshold >= 0"),
    ("sched.min_lr", lambda v, c: v >= 0, "use a value >= 0"),
    ("loss.label_smoothing", lambda v, c: 0 <= v < 1, "use a value in [0, 1)"),
    ("loss.pos_weight", lambda v, c: v is None or v > 0, "use a positive weight, or null"),
    ("loss.class_weights", lambda v, c: v is None or (all(w >= 0 for w in v) and sum(v) > 0),
     "use one non-negative weight per class (not all zero), or null"),
    ("ensemble.bagging", lambda v, c: v >= 0, "use a count >= 0 (0: no bagging)"),
    ("ensemble.inner_k", lambda v, c: v >= 2, "use k >= 2 inner folds"),
    ("ensemble.rounds", lambda v, c: v >= 1, "use at least 1 greedy selection round"),
    ("ensemble.bags", lambda v, c: v >= 1, "use at least 1 bag (1: select from all members at once)"),
    ("ensemble.name", lambda v, c: name_of(v) != "greedy" or c.eval.val_fraction > 0,
     "greedy selection reads validation rows: set eval.val_fraction > 0"),
    ("ensemble.temperature", lambda v, c: v > 0, "use a temperature > 0"),
    ("ensemble.alpha", lambda v, c: 0 <= v <= 1, "use a weight in [0, 1]"),
    ("ensemble.mc_dropout", lambda v, c: v >= 0, "use a count >= 0 (0: no dropout passes)"),
    ("ensemble.mc_dropout", lambda v, c: v == 0 or c.model.dropout > 0 or c.model.name == "module", "dropout passes need model.dropout > 0"),
    ("ensemble.name", lambda v, c: name_of(v) != "none" or not (c.ensemble.bagging or c.ensemble.mc_dropout),
     "bagging and dropout passes make ensemble members: use ensemble=seeds or ensemble=compare"),
    ("sample.lr", lambda v, c: v is None or (len(v) == 2 and 0 < v[0] <= v[1]),
     "use [low, high] with 0 < low <= high (drawn log-uniform), or null"),
    ("sample.weight_decay", lambda v, c: v is None or (len(v) == 2 and 0 < v[0] <= v[1]),
     "use [low, high] with 0 < low <= high (drawn log-uniform), or null"),
    ("sample.label_smoothing", lambda v, c: v is None or (len(v) == 2 and 0 <= v[0] <= v[1] < 1),
     "use [low, high] with 0 <= low <= high < 1, or null"),
    ("ensemble.name", lambda v, c: name_of(v) not in ("stacking", "distill", "compare") or all(
        x is None for x in (c.sample.lr, c.sample.weight_decay, c.sample.label_smoothing)),
     "stacking's inner models and distillation's students train with the shared config, not each seed's draws "
     "of sample.*: use ensemble=greedy or ensemble=seeds with sample.*"),
    ("reg.l2", lambda v, c: v >= 0, "use a penalty >= 0"),
    ("reg.l1", lambda v, c: v >= 0, "use a penalty >= 0"),
    ("eval.test_fraction", lambda v, c: 0 < v < 1, "use a fraction in (0, 1)"),
    ("eval.val_fraction", lambda v, c: 0 <= v < (1 - c.eval.test_fraction if name_of(c.eval.name) == "holdout" else 1),
     "use a fraction in [0, 1 - eval.test_fraction) for holdout, [0, 1) otherwise"),
    ("eval.val_fraction", lambda v, c: v > 0 or (c.trainer.early_stopping.patience is None
                                                  and not c.trainer.early_stopping.restore_best),
     "early stopping reads validation rows: use a fraction > 0 or set "
     "trainer.early_stopping.patience=null trainer.early_stopping.restore_best=false"),
    ("eval.k", lambda v, c: v >= 2, "use at least 2 folds"),
    ("eval.repeats", lambda v, c: v >= 1, "use a count >= 1"),
    ("trainer.early_stopping.monitor", lambda v, c: v in MONITORS, _MONITORS),
    ("trainer.early_stopping.patience", lambda v, c: v is None or v >= 1,
     "use an integer >= 1, or null to never stop early"),
    ("trainer.early_stopping.min_delta", lambda v, c: v >= 0, "use a value >= 0"),
    ("trainer.early_stopping.start_from_epoch", lambda v, c: v >= 0, "use an epoch >= 0"),
    ("trainer.grad_clip.norm", lambda v, c: v is None or v > 0, "use a positive number, or null for no clipping"),
    ("trainer.grad_clip.value", lambda v, c: v is None or v > 0, "use a positive number, or null for no clipping"),
]

# Keys that only some choices of their group read. Set to anything but the schema's default with
# another choice, they would be silently ignored, so they are refused instead.
USED_BY: dict[str, tuple[str, ...]] = {
    "optim.momentum": ("sgd", "rmsprop"), "optim.nesterov": ("sgd",), "optim.dampening": ("sgd",),
    "optim.betas": ("adam", "adamw"), "optim.eps": ("adam", "adamw", "rmsprop", "adagrad"),
    "optim.alpha": ("rmsprop",), "optim.initial_accumulator_value": ("adagrad",),
    "sched.step_size": ("step",), "sched.gamma": ("step", "exponential"),
    "sched.eta_min": ("cosine", "warmup_cosine"), "sched.warmup_epochs": ("warmup_cosine",),
    **{f"sched.{k}": ("onecycle",) for k in ("max_lr", "pct_start", "div_factor", "final_div_factor")},
    **{f"sched.{k}": ("plateau",) for k in ("monitor", "factor", "patience", "threshold", "min_lr")},
    "eval.k": ("kfold",), "eval.repeats": ("kfold",), "eval.test_fraction": ("holdout",),
    "ensemble.rounds": ("greedy", "compare"), "ensemble.bags": ("greedy", "compare"),
    # runner's own layers; model=module (your class) and moe build theirs without them
    "model.hidden": ("mlp", "logreg"), "model.dropout": ("mlp", "logreg", "cnn", "cnn_vmap"),
    "model.norm": ("mlp", "logreg", "cnn", "cnn_vmap"),
    # your class's: runner's own models have no class, arguments or path to choose
    "model.target": ("module",), "model.args": ("module",), "model.path": ("module",),
}


def _widths(model: ModelConfig) -> List[int]:
    return list(model.channels) if model.name in ("cnn", "cnn_vmap") else list(model.hidden)


def lookup(cfg: Any, key: str) -> Any:
    """The value at a dotted key (`optim.lr`) of a config object."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _shown(value: Any) -> str:
    value = getattr(value, "value", value)
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


def validate(cfg: Config) -> None:
    """Check values the types alone cannot; raise RunnerError naming the key and what is allowed."""
    for key, value in _floats(cfg, ""):
        if not math.isfinite(value):
            raise RunnerError(f"{key}={_shown(value)} is not valid: use a finite number")
    for key, users in USED_BY.items():
        group, _, field_name = key.partition(".")
        choice = name_of(lookup(cfg, group).name)
        default = _default(type(lookup(cfg, group)), field_name)
        value = lookup(cfg, key)
        if choice not in users and _plain(value) != _plain(default):
            raise RunnerError(f"{key}={_shown(value)} has no effect with {group}={choice}: only "
                              f"{group}={'/'.join(users)} use{'s' * (len(users) == 1)} it (remove it, or "
                              f"choose {group}={users[0]})")
    for key, ok, allowed in RULES:
        value = lookup(cfg, key)
        if not _ignored(cfg, key) and not ok(value, cfg):
            raise RunnerError(f"{key}={_shown(value)} is not valid: {allowed}")


def _ignored(cfg: Config, key: str) -> bool:
    """Whether the chosen option of `key`'s group never reads it (its default then stands unchecked)."""
    group = key.partition(".")[0]
    return key in USED_BY and name_of(lookup(cfg, group).name) not in USED_BY[key]


def check_task(cfg: Config, task: str, classes: List[str]) -> None:
    """Checks that need the dataset's task: monitored values, the selection metric, class weights."""
    monitor = default_monitor(task == "regression")
    for key in ("trainer.early_stopping.monitor", "sched.monitor"):
        value = lookup(cfg, key)
        if key == "sched.monitor" and name_of(cfg.sched.name) != "plateau":
            continue
        if value not in ("val/loss", monitor):
            raise RunnerError(f"{key}={value} does not apply to a {task} target; use one of: val/loss, {monitor}")
    names = metric_names(task)
    metric = cfg.eval.metric
    if metric is not None and metric.split("/")[-1] not in names:
        raise RunnerError(f"eval.metric={metric} does not apply to a {task} target; choose one of: {', '.join(names)}")
    weights = cfg.loss.class_weights
    if weights is not None and len(weights) != len(classes):
        raise RunnerError(f"loss.class_weights has {len(weights)} values; this {task} target needs one per class "
                          f"({len(classes)}: {', '.join(classes) or 'none'})")
    if cfg.loss.pos_weight is not None and task != "binary":
        raise RunnerError(f"loss.pos_weight={cfg.loss.pos_weight} applies to a binary target only; this one is "
                          f"{task} (set loss.pos_weight=null)")


def _floats(node: Any, prefix: str):
    """(dotted key, value) of every float in a config object, list items included."""
    for f in fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if is_dataclass(value):
            yield from _floats(value, key + ".")
        elif isinstance(value, float):
            yield key, value
        elif isinstance(value, (list, tuple)):
            yield from ((key, v) for v in value if isinstance(v, float))


def _default(schema: type, name: str) -> Any:
    f = next(f for f in fields(schema) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
