"""Metric names per task, the default one, and which direction is better: facts the config is checked against and
that training, reports and sweeps read (imports neither numpy nor torch)."""

from runner.errors import RunnerError

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2", "mean_error")
# mean_error counts as lower-is-better only by magnitude; evaluate.names.best_of compares |value|.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mse", "rmse", "mae", "loss", "mean_error"})
TASKS = ("binary", "multiclass", "regression")


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


def higher_is_better(metric: str) -> bool:
    """Whether larger values of `metric` ("accuracy", "test/rmse", "val/loss", ...) are better."""
    name = metric.split("/")[-1]
    if name not in CLASSIFICATION_METRICS + REGRESSION_METRICS + ("loss",):
        valid = ", ".join(CLASSIFICATION_METRICS + REGRESSION_METRICS + ("loss",))
        raise RunnerError(f"unknown metric {metric!r}; choose one of: {valid}")
    return name not in LOWER_IS_BETTER


def require_task(task: str) -> None:
    """Refuse a task name other than binary, multiclass or regression."""
    if task not in TASKS:
        raise RunnerError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
