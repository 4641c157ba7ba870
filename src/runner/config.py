"""Typed schemas for every config group, registered in Hydra's ConfigStore, and their checks."""

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, List, Optional

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
    group = "group"


class MoeLoss(str, Enum):
    per_expert = "per_expert"
    blended = "blended"


class Pool(str, Enum):
    max = "max"
    avg = "avg"


class DeltaMode(str, Enum):
    abs = "abs"
    rel = "rel"


class EvalName(str, Enum):
    holdout = "holdout"
    kfold = "kfold"
    loo = "loo"


class AvgName(str, Enum):
    none = "none"
    last = "last"
    best = "best"
    ema = "ema"
    swa = "swa"
    soup = "soup"
    greedy_soup = "greedy_soup"
    compare = "compare"


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
    """Which table or image set to learn from and how to read it."""

    name: str = "heart"
    path: Optional[str] = None  # None: the file bundled under `name`; images: a folder of class folders or .npz
    target: Optional[str] = None  # the column to predict (heart: num)
    task: Task = Task.auto
    positive_above: Optional[float] = None  # binary target = (target > this); heart: num > 0
    categorical: Optional[List[str]] = None  # None: inferred from the column types
    numeric: Optional[List[str]] = None
    drop: List[str] = field(default_factory=list)
    weight: Optional[str] = None  # a column of per-row sample weights (not a feature)
    size: Optional[List[int]] = None  # images: [height, width] to resize to; None: as stored (a folder's must agree)
    cache: Optional[str] = None  # downloaded images: the cache folder; None: $RUNNER_CACHE or ~/.cache/runner
    limit: Optional[int] = None  # images: keep a stratified subset of this many (quick runs); None: all


@dataclass
class ModelConfig:
    """The model of every member: mlp (`hidden: []` is logistic or linear regression) or cnn."""

    name: str = "mlp"
    hidden: List[int] = field(default_factory=lambda: [16])  # mlp: hidden widths
    activation: Activation = Activation.relu
    dropout: float = 0.0  # inverted dropout after every hidden layer (cnn: before the head), never on the output
    init: Init = Init.default
    norm: Norm = Norm.none  # after each hidden layer, before the activation (group: cnn and mlp, `groups` groups)
    groups: int = 4  # norm=group: channels (features) per layer split into this many groups
    channels: List[int] = field(default_factory=lambda: [16, 32])  # cnn: a conv block per entry
    kernel: int = 3  # cnn: square kernel, 'same' padding
    pool: Pool = Pool.max  # cnn: 2x2 pooling after each conv block (while the image is at least 2x2)
    experts: int = 4  # moe: K experts per member
    expert: List[int] = field(default_factory=list)  # moe: each expert's hidden widths ([] = a linear expert)
    top_k: Optional[int] = None  # moe: experts used per row (sparse, gates renormalized); None = all K (dense)


@dataclass
class LossConfig:
    name: LossName = LossName.auto
    label_smoothing: float = 0.0  # targets y(1-a) + a/K
    pos_weight: Optional[float] = None  # BCE: weight of the positive term
    class_weights: Optional[List[float]] = None  # one weight per class (code order), weighted mean
    moe: MoeLoss = MoeLoss.per_expert  # model=moe: per_expert = Σ_k g_k·loss(expert k); blended = loss(Σ_k g_k·expert k)
    balance: float = 0.0  # model=moe: weight of the load-balancing term K·Σ_k (share routed to k)·(mean gate k)


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
class AugConfig:
    """Training-batch augmentation, drawn fresh every step from each member's own streams; never on val/test."""

    shift: int = 0  # images: random translation by up to this many pixels (a crop of the padded image)
    flip: bool = False  # images: mirror left-right with probability 1/2
    rotate: float = 0.0  # images: random rotation by up to ± this many degrees
    noise: float = 0.0  # Gaussian noise of this sd added to the standardized inputs (tables too)
    mixup: float = 0.0  # alpha of Beta(alpha, alpha): blend two rows' inputs and targets; 0 = off
    cutmix: float = 0.0  # alpha: paste a patch of another image, targets mixed by area (with mixup: 1/2 each)


class EnsembleName(str, Enum):
    none = "none"
    seeds = "seeds"
    stacking = "stacking"
    blending = "blending"
    distill = "distill"
    compare = "compare"


class Combine(str, Enum):
    mean = "mean"
    vote = "vote"
    linear = "linear"
    loglinear = "loglinear"


@dataclass
class EnsembleConfig:
    """Combining each split's members (seeds, bags, dropout passes) into one prediction, scored beside them."""

    name: EnsembleName = EnsembleName.none  # seeds: combine with `combine`; stacking, blending: a meta-model; compare: all
    combine: Combine = Combine.mean  # mean / vote of probabilities; linear Σλp; loglinear softmax(Σλ log p)
    weights: Optional[List[float]] = None  # linear/loglinear: one λ per member of a split; null: learned on val
    bagging: int = 0  # N bootstrap resamples (same size, with replacement) of each split's training rows per seed
    mc_dropout: int = 0  # N stochastic passes per member at test time (model.dropout > 0), each a member
    inner_k: int = 3  # stacking: inner folds over each split's training rows (out-of-fold meta-features)
    passthrough: bool = True  # stacking, blending: the meta-model also sees the inputs beside the probabilities
    student: ModelConfig = field(default_factory=lambda: ModelConfig(hidden=[4]))  # distill: the student model
    temperature: float = 1.0  # distill: teacher probabilities softened as p^(1/T), renormalized (the student learns them)
    alpha: float = 0.1  # distill: targets (1 - alpha)·teacher + alpha·true label


@dataclass
class AvgConfig:
    """Weight averaging within each member's own run (never across members), scored beside the restored best."""

    name: AvgName = AvgName.none  # compare: every averaging below, from one fit
    k: int = 5  # last, best: how many epoch checkpoints go into the mean
    ingredients: int = 10  # soup, greedy_soup: the member's best checkpoints by validation that may go in
    decay: float = 0.99  # ema, per optimizer step
    warmup: bool = True  # ema: decay min(decay, (1 + n) / (10 + n)) after n updates, so short runs work
    start_epoch: int = 10  # swa: epochs from this one on are averaged (each epoch's end)
    lr: Optional[float] = None  # swa: constant learning rate from start_epoch on; None: the schedule's
    over: str = "member"  # what a weight average spans; only "member" (the guard against cross-member averages)


@dataclass
class EvalConfig:
    """How rows are split into train/val/test for each member."""

    name: EvalName = EvalName.holdout
    val_fraction: float = 0.2  # validation carved from the training rows (holdout: of all rows)
    test_fraction: float = 0.2  # holdout only
    k: int = 5  # kfold only
    repeats: int = 1  # kfold only: repeated k-fold, reshuffled per repeat
    refit: bool = False  # holdout only: retrain on train + val for the selected epochs
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
    checkpoint_every: Optional[int] = None  # epochs between fit-state checkpoints; None: about once a minute
    resume: bool = False  # continue from the run directory's saved fit state (runner resume DIR sets it)
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
    aug: AugConfig = field(default_factory=AugConfig)
    avg: AvgConfig = field(default_factory=AvgConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def register() -> None:
    """Put the schemas in Hydra's ConfigStore so every YAML file is checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


MONITORED = ("loss", "accuracy", "rmse")


def name_of(choice: Any) -> str:
    """The plain string of a config choice, whether an Enum member or already a string."""
    return str(getattr(choice, "value", choice))


def validate(cfg: Config) -> None:
    """Check values the types alone cannot; raise RunnerError naming the key and what is allowed."""

    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise RunnerError(f"{key}={value!r} is not valid: {allowed}")

    t, m, o, e, d = cfg.trainer, cfg.model, cfg.optim, cfg.eval, cfg.dataset
    need(d.size is None or (len(d.size) == 2 and all(s >= 1 for s in d.size)), "dataset.size",
         None if d.size is None else list(d.size), "use [height, width] in pixels, or null to keep the stored size")
    need(d.limit is None or d.limit >= 1, "dataset.limit", d.limit, "use a count of images, or null for all")
    need(t.epochs >= 1, "trainer.epochs", t.epochs, "use an integer >= 1")
    need(t.seeds >= 1, "trainer.seeds", t.seeds, "use a count >= 1")
    need(t.threads is None or t.threads >= 1, "trainer.threads", t.threads, "use a count >= 1, or null for automatic")
    bs = t.batch_size
    need(bs == "full" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1),
         "trainer.batch_size", bs, "use an integer >= 1 or 'full'")
    need(all(h >= 1 for h in m.hidden), "model.hidden", list(m.hidden), "use positive widths, e.g. [16] or [] for none")
    need(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "use a probability in [0, 1)")
    need(bool(m.channels) and all(c >= 1 for c in m.channels), "model.channels", list(m.channels),
         "use positive channel counts, e.g. [16, 32]")
    need(m.kernel >= 1 and m.kernel % 2 == 1, "model.kernel", m.kernel, "use an odd kernel size >= 1, e.g. 3")
    need(m.groups >= 1, "model.groups", m.groups, "use a group count >= 1")
    need(m.experts >= 1, "model.experts", m.experts, "use a count >= 1")
    need(m.top_k is None or 1 <= m.top_k <= m.experts, "model.top_k", m.top_k,
         f"use 1..model.experts ({m.experts}), or null for a dense gate")
    need(all(h >= 1 for h in m.expert), "model.expert", list(m.expert), "use positive widths, or [] for linear experts")
    need(cfg.loss.balance >= 0, "loss.balance", cfg.loss.balance, "use a weight >= 0")
    widths = list(m.channels) if m.name == "cnn" else list(m.hidden)
    need(name_of(m.norm) != "group" or all(w % m.groups == 0 for w in widths), "model.groups", m.groups,
         f"norm=group needs every width ({widths}) divisible by model.groups")
    need(o.lr > 0, "optim.lr", o.lr, "use a positive learning rate")
    need(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "use a value >= 0")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas), "use two values in [0, 1)")
    need(0 <= o.momentum < 1, "optim.momentum", o.momentum, "use a value in [0, 1)")
    need(not o.nesterov or (o.momentum > 0 and o.dampening == 0), "optim.nesterov", o.nesterov,
         "nesterov needs optim.momentum > 0 and optim.dampening=0")
    need(0 <= cfg.loss.label_smoothing < 1, "loss.label_smoothing", cfg.loss.label_smoothing, "use a value in [0, 1)")
    need(0 < e.test_fraction < 1, "eval.test_fraction", e.test_fraction, "use a fraction in (0, 1)")
    need(0 <= e.val_fraction < 1 - e.test_fraction, "eval.val_fraction", e.val_fraction,
         "use a fraction in [0, 1 - eval.test_fraction)")
    a = cfg.aug
    need(a.shift >= 0, "aug.shift", a.shift, "use a pixel count >= 0")
    need(0 <= a.rotate <= 180, "aug.rotate", a.rotate, "use degrees in [0, 180]")
    for key in ("noise", "mixup", "cutmix"):
        need(getattr(a, key) >= 0, f"aug.{key}", getattr(a, key), "use a value >= 0 (0 turns it off)")
    en = cfg.ensemble
    need(en.bagging >= 0, "ensemble.bagging", en.bagging, "use a count >= 0 (0: no bagging)")
    need(en.inner_k >= 2, "ensemble.inner_k", en.inner_k, "use k >= 2 inner folds")
    need(en.temperature > 0, "ensemble.temperature", en.temperature, "use a temperature > 0")
    need(0 <= en.alpha <= 1, "ensemble.alpha", en.alpha, "use a weight in [0, 1]")
    need(en.mc_dropout >= 0, "ensemble.mc_dropout", en.mc_dropout, "use a count >= 0 (0: no dropout passes)")
    need(en.mc_dropout == 0 or m.dropout > 0, "ensemble.mc_dropout", en.mc_dropout,
         "dropout passes need model.dropout > 0")
    need(name_of(en.name) != "none" or not (en.bagging or en.mc_dropout), "ensemble.name", name_of(en.name),
         "bagging and dropout passes make ensemble members: use ensemble=seeds or ensemble=compare")
    need(cfg.reg.l2 >= 0 and cfg.reg.l1 >= 0, "reg.l2/reg.l1", (cfg.reg.l2, cfg.reg.l1), "use penalties >= 0")
    for key in ("norm", "value"):
        v = getattr(t.grad_clip, key)
        need(v is None or v > 0, f"trainer.grad_clip.{key}", v, "use a positive number, or null for no clipping")
    need(cfg.loss.pos_weight is None or cfg.loss.pos_weight > 0, "loss.pos_weight", cfg.loss.pos_weight,
         "use a positive weight, or null")
    es = t.early_stopping
    need(cfg.sched.monitor == "val/loss" or cfg.sched.monitor.removeprefix("val/") in MONITORED, "sched.monitor",
         cfg.sched.monitor, "choose one of " + ", ".join("val/" + n for n in MONITORED))
    name = es.monitor.removeprefix("val/")
    need(es.monitor.startswith("val/") and name in MONITORED, "trainer.early_stopping.monitor", es.monitor,
         "choose one of " + ", ".join("val/" + n for n in MONITORED))
    need(es.patience is None or es.patience >= 1, "trainer.early_stopping.patience", es.patience,
         "use an integer >= 1, or null to never stop early")
    need(e.val_fraction > 0 or es.patience is None and not es.restore_best, "eval.val_fraction", e.val_fraction,
         "early stopping reads validation rows: use a fraction > 0 or set "
         "trainer.early_stopping.patience=null trainer.early_stopping.restore_best=false")


def valid_keys(path: str) -> List[str]:
    """The keys allowed under a dotted config path (`optim` -> lr, momentum, ...)."""
    node: Any = Config
    for part in [p for p in path.split(".") if p]:
        match = [f for f in fields(node) if f.name == part]
        if not match:
            return []
        node = match[0].type
        if not is_dataclass(node):
            return []
    return [f.name for f in fields(node)]
