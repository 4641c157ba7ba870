"""Every reported metric and what runner knows of it, in one table: the task it belongs to, which direction is
better, the values it can take, and what its interval rests on. The config is checked against it, and training,
the statistics, reports and sweeps read it (it imports neither numpy nor torch). A new metric is a row here and
its computation in evaluate/metrics.py."""

from dataclasses import dataclass

from runner.errors import RunnerError

INF = float("inf")


@dataclass(frozen=True)
class Metric:
    lower_is_better: bool = False  # mean_error: nearest 0 is best, so lower by magnitude (report.best_of)
    low: float = 0.0  # the values it can take: no interval reported for it leaves them
    high: float = 1.0
    high_multiclass: float | None = None  # where a multiclass task reaches further (brier: 2)
    proportion: bool = False  # a share of rows, 0/1 per row: Wilson's interval applies
    # A loss whose per-row values are skewed right, so a sample's low estimate comes with a small SE: over folds its
    # headline is Nadeau–Bengio corrected and taken on the inverse-root scale (evaluate.headline); for R² the loss
    # is 1 − R², a fold's MSE over its variance of y
    skewed: bool = False


CLASSIFICATION = {
    "accuracy": Metric(proportion=True),
    "balanced_accuracy": Metric(),
    "precision": Metric(),
    "recall": Metric(),
    "f1": Metric(),
    "roc_auc": Metric(),
    "log_loss": Metric(lower_is_better=True, high=INF, skewed=True),
    "brier": Metric(lower_is_better=True, high_multiclass=2.0),  # squared distance between points of the simplex
}
REGRESSION = {
    "mse": Metric(lower_is_better=True, high=INF, skewed=True),
    "rmse": Metric(lower_is_better=True, high=INF),
    "mae": Metric(lower_is_better=True, high=INF, skewed=True),
    "r2": Metric(low=-INF, skewed=True),
    "mean_error": Metric(lower_is_better=True, low=-INF, high=INF),
}
LOSS = Metric(lower_is_better=True, high=INF)  # val/loss, train/loss: the training loss
CLASSIFICATION_METRICS = tuple(CLASSIFICATION)
REGRESSION_METRICS = tuple(REGRESSION)
TASKS = ("binary", "multiclass", "regression")


def metric(name: str) -> Metric:
    """The row of `name` ("accuracy", "test/rmse", "val/loss", ...)."""
    short = name.split("/")[-1]
    found = CLASSIFICATION.get(short) or REGRESSION.get(short) or (LOSS if short == "loss" else None)
    if found is None:
        valid = ", ".join(CLASSIFICATION_METRICS + REGRESSION_METRICS + ("loss",))
        raise RunnerError(f"unknown metric {name!r}; choose one of: {valid}")
    return found


def default_monitor(regression: bool) -> str:
    """The validation metric training tracks beside val/loss: val/rmse for a regression target, else val/accuracy."""
    return "val/rmse" if regression else "val/accuracy"


# What early stopping and sched=plateau may monitor: the loss, or a task's default monitor.
MONITORS = ("val/loss", default_monitor(False), default_monitor(True))


def default_metric(task: str) -> str:
    """The headline/selection metric of a task: "accuracy" or "rmse" (its default monitor, on test rows)."""
    require_task(task)
    return default_monitor(task == "regression").removeprefix("val/")


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics reported for `task` ("binary", "multiclass" or "regression"), in report order."""
    require_task(task)
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def higher_is_better(name: str) -> bool:
    """Whether larger values of `name` ("accuracy", "test/rmse", "val/loss", ...) are better."""
    return not metric(name).lower_is_better


def metric_range(name: str, task: str) -> tuple[float, float]:
    """The values `name` can take on `task`: no interval reported for it leaves this range."""
    row = metric(name)
    return row.low, row.high_multiclass if task == "multiclass" and row.high_multiclass else row.high


def require_task(task: str) -> None:
    """Refuse a task name other than binary, multiclass or regression."""
    if task not in TASKS:
        raise RunnerError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
