"""Typed schemas for every config group, registered in Hydra's ConfigStore, and their checks."""

import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Callable, List, Optional

from hydra.core.config_store import ConfigStore

from runner.errors import RunnerError


class Task(str, Enum):
    auto = "auto"
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class Activation(str, Enum):
    relu = "relu"
    tanh = "tanh"
    sigmoid = "sigmoid"
    leaky_relu = "leaky_relu"
    gelu = "gelu"


class Init(str, Enum):
    default = "default"
    glorot = "glorot"
    he = "he"


class LossName(str, Enum):
    auto = "auto"
    bce = "bce"
    ce = "ce"
    mse = "mse"


class OptimName(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"
    rmsprop = "rmsprop"
    adagrad = "adagrad"


class SchedName(str, Enum):
    constant = "constant"
    step = "step"
    exponential = "exponential"
    cosine = "cosine"
    warmup_cosine = "warmup_cosine"
    onecycle = "onecycle"
    plateau = "plateau"


class Norm(str, Enum):
    none = "none"
    batch = "batch"
    layer = "layer"


class DeltaMode(str, Enum):
    abs = "abs"
    rel = "rel"


class EvalName(str, Enum):
    holdout = "holdout"
    kfold = "kfold"
    loo = "loo"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Mode(str, Enum):
    auto = "auto"
    min = "min"
    max = "max"


@dataclass
class DatasetConfig:
    """Which table to learn from and how to read its columns."""

    name: str = "heart"
    path: Optional[str] = None  # None: the file bundled under `name`
    target: Optional[str] = None  # the column to predict (heart: num)
    task: Task = Task.auto
    positive_above: Optional[float] = None  # binary target = (target > this); heart: num > 0
    positive: Optional[str] = None  # binary: the class whose probability is p_1 (None: the second in sorted order)
    categorical: Optional[List[str]] = None  # None: inferred from the column types
    numeric: Optional[List[str]] = None
    drop: List[str] = field(default_factory=list)
    weight: Optional[str] = None  # a column of per-row sample weights (not a feature)


@dataclass
class ModelConfig:
    """A stacked MLP; `hidden: []` is logistic (or linear) regression."""

    name: str = "mlp"
    hidden: List[int] = field(default_factory=lambda: [16])
    activation: Activation = Activation.relu
    dropout: float = 0.0  # inverted dropout after every hidden layer, never on the output
    init: Init = Init.default
    norm: Norm = Norm.none  # after each hidden dense layer, before the activation


@dataclass
class LossConfig:
    name: LossName = LossName.auto
    label_smoothing: float = 0.0  # targets y(1-a) + a/K
    pos_weight: Optional[float] = None  # BCE: weight of the positive term
    class_weights: Optional[List[float]] = None  # one weight per class (code order), weighted mean


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0  # decoupled for adamw; added to the gradient (= L2 for sgd) otherwise
    alpha: float = 0.99  # rmsprop's smoothing constant
    initial_accumulator_value: float = 0.0  # adagrad


@dataclass
class SchedConfig:
    """The learning-rate schedule, stepped once per epoch (per member for plateau)."""

    name: SchedName = SchedName.constant
    step_size: int = 30  # step
    gamma: float = 0.1  # step, exponential
    eta_min: float = 0.0  # cosine, warmup_cosine
    warmup_epochs: int = 5  # warmup_cosine
    max_lr: Optional[float] = None  # onecycle; None: optim.lr
    pct_start: float = 0.3  # onecycle
    div_factor: float = 25.0  # onecycle
    final_div_factor: float = 1e4  # onecycle
    monitor: str = "val/loss"  # plateau
    factor: float = 0.1  # plateau
    patience: int = 10  # plateau
    threshold: float = 1e-4  # plateau, relative
    min_lr: float = 0.0  # plateau


@dataclass
class RegConfig:
    """Penalties added to each member's loss, on kernels only (biases and norm parameters excluded)."""

    l2: float = 0.0  # (l2/2)·Σw²
    l1: float = 0.0  # l1·Σ|w|


@dataclass
class EvalConfig:
    """How rows are split into train/val/test for each member."""

    name: EvalName = EvalName.holdout
    val_fraction: float = 0.2  # validation carved from the training rows (holdout: of all rows)
    test_fraction: float = 0.2  # holdout only
    k: int = 5  # kfold only
    repeats: int = 1  # kfold only: repeated k-fold, reshuffled per repeat
    refit: bool = False  # retrain each member on its train + val rows for its selected epochs, then test
    stratify: bool = True
    split_seed: int = 0
    metric: Optional[str] = None  # selection metric; None: accuracy (classification) or rmse
    baselines: List[str] = field(default_factory=list)  # beside majority/mean: logreg, knn


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val/loss"
    mode: Mode = Mode.auto
    patience: Optional[int] = 20  # None: never stop early (still restores the best epoch)
    min_delta: float = 0.0
    min_delta_mode: DeltaMode = DeltaMode.abs  # rel: improve by min_delta·|best|
    start_from_epoch: int = 0  # epochs before this neither count as best nor use up patience
    baseline: Optional[float] = None  # a member must beat this value to count as improving
    restore_best: bool = True


@dataclass
class GradClipConfig:
    """Gradient clipping, computed per member (never over the whole stack)."""

    norm: Optional[float] = None
    value: Optional[float] = None


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: Any = 32  # an int, or "full" for full-batch gradient descent
    seeds: int = 1
    seed: int = 0
    device: Device = Device.auto
    threads: Optional[int] = None  # CPU threads; None: 1 for small populations, where more threads only wait
    progress: bool = True
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: GradClipConfig = field(default_factory=GradClipConfig)


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    overwrite: bool = False  # replace the run already in hydra.run.dir (a used directory is refused otherwise)


def register() -> None:
    """Put the schemas in Hydra's ConfigStore so every YAML file is checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


MONITORED = ("loss", "accuracy", "rmse")
_MONITORS = "choose one of " + ", ".join("val/" + n for n in MONITORED)

# Every value a schema's type cannot check: (key, test of the value and the whole config, what is allowed).
# One table, so a constraint is declared once and `validate` names the key and the fix in one line.
RULES: list[tuple[str, Callable[[Any, "Config"], bool], str]] = [
    ("trainer.epochs", lambda v, c: v >= 1, "use an integer >= 1"),
    ("trainer.seeds", lambda v, c: v >= 1, "use a count >= 1"),
    ("trainer.threads", lambda v, c: v is None or v >= 1, "use a count >= 1, or null for automatic"),
    ("trainer.batch_size", lambda v, c: v == "full" or (type(v) is int and v >= 1), "use an integer >= 1 or 'full'"),
    ("model.hidden", lambda v, c: all(h >= 1 for h in v), "use positive widths, e.g. [16] or [] for none"),
    ("model.dropout", lambda v, c: 0.0 <= v < 1.0, "use a probability in [0, 1)"),
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
    ("sched.gamma", lambda v, c: v > 0, "use a positive factor (below 1 decays the learning rate)"),
    ("sched.eta_min", lambda v, c: 0 <= v <= c.optim.lr, "use a value in [0, optim.lr]"),
    ("sched.warmup_epochs", lambda v, c: 0 <= v < c.trainer.epochs, "use a count in [0, trainer.epochs)"),
    ("sched.max_lr", lambda v, c: v is None or v > 0, "use a positive learning rate, or null for optim.lr"),
    ("sched.pct_start", lambda v, c: 0 < v < 1, "use a fraction in (0, 1)"),
    ("sched.div_factor", lambda v, c: v > 0, "use a positive divisor"),
    ("sched.final_div_factor", lambda v, c: v > 0, "use a positive divisor"),
    ("sched.monitor", lambda v, c: v.removeprefix("val/") in MONITORED and v.startswith("val/"), _MONITORS),
    ("sched.factor", lambda v, c: 0 < v < 1, "use a factor in (0, 1)"),
    ("sched.patience", lambda v, c: v >= 0, "use a number of epochs >= 0"),
    ("sched.threshold", lambda v, c: v >= 0, "use a relative threshold >= 0"),
    ("sched.min_lr", lambda v, c: v >= 0, "use a value >= 0"),
    ("loss.label_smoothing", lambda v, c: 0 <= v < 1, "use a value in [0, 1)"),
    ("loss.pos_weight", lambda v, c: v is None or v > 0, "use a positive weight, or null"),
    ("loss.class_weights", lambda v, c: v is None or (all(w >= 0 for w in v) and sum(v) > 0),
     "use one non-negative weight per class (not all zero), or null"),
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
    ("trainer.early_stopping.monitor", lambda v, c: v.startswith("val/") and v[4:] in MONITORED, _MONITORS),
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
}


def name_of(choice: Any) -> str:
    """The plain string of a config choice, whether an Enum member or already a string."""
    return str(getattr(choice, "value", choice))


def lookup(cfg: Any, key: str) -> Any:
    """The value at a dotted key (`optim.lr`) of a config object."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _shown(value: Any) -> str:
    value = getattr(value, "value", value)
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


def validate(cfg: "Config") -> None:
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


def _ignored(cfg: "Config", key: str) -> bool:
    """Whether the chosen option of `key`'s group never reads it (its default then stands unchecked)."""
    group = key.partition(".")[0]
    return key in USED_BY and name_of(lookup(cfg, group).name) not in USED_BY[key]


def check_task(cfg: "Config", task: str, classes: List[str]) -> None:
    """Checks that need the dataset's task: monitored values, the selection metric, class weights."""
    from runner.evaluate.names import metric_names

    monitor = "val/rmse" if task == "regression" else "val/accuracy"
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
