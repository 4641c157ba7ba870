"""Typed schemas for every config group, registered in Hydra's ConfigStore (their values: runner.config.checks)."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


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


class DecayOn(str, Enum):
    kernels = "kernels"  # weight matrices and convolution kernels: no decay on biases, norms, 0/1-dim parameters
    all = "all"  # every trainable parameter (torch.optim's own default)


class Pool(str, Enum):
    max = "max"
    avg = "avg"


class Encoding(str, Enum):
    auto = "auto"  # codes for a model=module class whose __init__ takes cat_cardinalities, one-hot otherwise
    onehot = "onehot"  # a 0/1 column per category of the file's domain
    codes = "codes"  # one integer code per categorical column, for embedding layers (model=module)


class ModulePath(str, Enum):
    auto = "auto"  # the stacked fast path where torch.fx can follow the forward, else vmap over all of it
    fast = "fast"  # the stacked fast path, or a one-line error saying why the module cannot take it
    vmap = "vmap"  # the generic path: vmap of functional_call
    loop = "loop"  # members in turn: each member's forward called alone inside every step


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


class _Choices(str, Enum):
    """A choice whose names are not identifiers ("32", "16-mixed"); an int from YAML or the command line (32)
    finds its member too."""

    @classmethod
    def _missing_(cls, value):
        return cls.__members__.get(str(value))


# trainer.precision: 32 (float32 everywhere), bf16 (bfloat16 autocast of the forward pass, float32 weights and
# optimizer state), 16-mixed (float16 autocast with each member's own loss scale; for GPUs).
Precision = _Choices("Precision", {"32": "32", "bf16": "bf16", "16-mixed": "16-mixed"})


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
    positive: Optional[str] = None  # binary: the class whose probability is p_1 (None: the second in sorted order)
    categorical: Optional[List[str]] = None  # None: inferred from the column types
    numeric: Optional[List[str]] = None
    drop: List[str] = field(default_factory=list)
    keep: List[str] = field(default_factory=list)  # columns runner would drop (one value, ID-like text) kept
    na_values: List[str] = field(default_factory=list)  # cell texts read as missing in every column, besides pandas' NA
    weight: Optional[str] = None  # a column of per-row sample weights (not a feature)
    encoding: Encoding = Encoding.auto  # categorical columns: one-hot, or integer codes for embeddings
    size: Optional[List[int]] = None  # images: [height, width] to resize to; None: as stored (a folder's must agree)
    cache: Optional[str] = None  # downloaded images: the cache folder; None: $RUNNER_CACHE or ~/.cache/runner
    limit: Optional[int] = None  # images: keep a stratified subset of this many (quick runs); None: all
    loader: Optional[str] = None  # python: your function "package.module:load" returning (X, y) or a DataFrame
    args: Dict[str, Any] = field(default_factory=dict)  # python: keyword arguments of the loader


@dataclass
class ModelConfig:
    """The model of every member: mlp (`hidden: []` is logistic or linear regression), cnn, moe, or module (yours)."""

    name: str = "mlp"
    target: Optional[str] = None  # module: your nn.Module class, "package.module:Class"
    args: Dict[str, Any] = field(default_factory=dict)  # module: keyword arguments of the class
    path: ModulePath = ModulePath.auto  # module: how the population runs it (models/fast.py)
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
    weight_decay_on: DecayOn = DecayOn.kernels  # what weight_decay applies to (nanoGPT's, timm's rule by default)
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
    warmup_steps: int = 0  # any schedule: each member's rate ramps up linearly over its first this many steps
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
    greedy = "greedy"
    compare = "compare"


class Combine(str, Enum):
    mean = "mean"
    vote = "vote"
    linear = "linear"
    loglinear = "loglinear"


@dataclass
class EnsembleConfig:
    """Combining each split's members (seeds, bags, dropout passes) into one prediction, scored beside them."""

    name: EnsembleName = EnsembleName.none  # seeds: combine with `combine`; stacking, blending: a meta-model; greedy:
    # Caruana's selection on validation, the run's headline; compare: all
    combine: Combine = Combine.mean  # mean / vote of probabilities; linear Σλp; loglinear softmax(Σλ log p)
    weights: Optional[List[float]] = None  # linear/loglinear: one λ per member of a split; null: learned on val
    bagging: int = 0  # N bootstrap resamples (same size, with replacement) of each split's training rows per seed
    mc_dropout: int = 0  # N stochastic passes per member at test time (model.dropout > 0), each a member
    inner_k: int = 3  # stacking: inner folds over each split's training rows (out-of-fold meta-features)
    passthrough: bool = True  # stacking, blending: the meta-model also sees the inputs beside the probabilities
    student: ModelConfig = field(default_factory=lambda: ModelConfig(hidden=[4]))  # distill: the student model
    temperature: float = 1.0  # distill: teacher probabilities softened as p^(1/T), renormalized (the student learns them)
    alpha: float = 0.1  # distill: targets (1 - alpha)·teacher + alpha·true label
    rounds: int = 25  # greedy: selection rounds (with replacement); a member's weight is its share of the rounds
    bags: int = 1  # greedy: >1 runs the selection on this many random halves of the members, weights averaged


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
    refit: bool = False  # retrain each member on its train + val rows for its selected epochs, then test
    stratify: bool = True
    split_seed: int = 0
    metric: Optional[str] = None  # selection metric; None: accuracy (classification) or rmse
    baselines: List[str] = field(default_factory=list)  # beside majority/mean: logreg, knn, hgb


@dataclass
class SampleConfig:
    """Each seed of the run its own hyperparameters, drawn from these ranges: one configuration per seed, the same
    on every split (runner.sampling); null: the shared value for every member."""

    lr: Optional[List[float]] = None  # [low, high]: optim.lr, log-uniform
    weight_decay: Optional[List[float]] = None  # [low, high]: optim.weight_decay, log-uniform
    label_smoothing: Optional[List[float]] = None  # [low, high]: loss.label_smoothing, uniform (classification only)
    seed: int = 0  # the draws' seed (with the member's trainer seed)


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
    precision: Precision = Precision["32"]  # 32, bf16 or 16-mixed: autocast of the training forward pass
    threads: Optional[int] = None  # CPU threads; None: 1 for small populations, where more threads only wait
    stack: Any = "auto"  # members that step together: an int, or "auto" (your own module: measured, the fastest)
    # processes training groups of members side by side on the CPU; None: one per core where a step takes one thread
    # (trainer.threads unset)
    workers: Optional[int] = None
    # your module: a stacked group's activations stay within this; None: half the free memory and, on the CPU, at
    # most half again one member at a time's
    memory_gb: Optional[float] = None
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
    sample: SampleConfig = field(default_factory=SampleConfig)
    overwrite: bool = False  # replace the run already in hydra.run.dir (a used directory is refused otherwise)
    # report.png and curves.png; None: drawn for a single run, not for each job of a sweep (-m), whose jobs the
    # sweep's summary and TensorBoard compare (0.4 s of drawing per job would double a population sweep's time).
    plots: Optional[bool] = None


def register() -> None:
    """Put the schemas in Hydra's ConfigStore so every YAML file is checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def name_of(choice: Any) -> str:
    """The plain string of a config choice, whether an Enum member or already a string."""
    return str(getattr(choice, "value", choice))
