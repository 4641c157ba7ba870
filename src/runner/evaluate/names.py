"""What the statistics need to know of each metric: its range, whether it is a mean over rows or a proportion, and
which of several values is best (the names and directions themselves: runner.config.metric_names)."""

import numpy as np

from runner.config.metric_names import higher_is_better

# Metrics that are a mean of per-example values Z_i, so a single test set gives an SE over rows.
DECOMPOSABLE = ("accuracy", "log_loss", "brier", "mse", "mae", "mean_error")
# Metrics that are a proportion of rows (a 0/1 value per row), so Wilson's interval applies.
PROPORTIONS = ("accuracy",)
# Losses whose per-row values are skewed right, so a sample's low estimate comes with a small SE: over folds
# their headline is Nadeau–Bengio corrected and taken on the inverse-root scale (evaluate.headline); for R² the
# loss is 1 − R², a fold's MSE over its variance of y.
SKEWED_LOSSES = ("mse", "mae", "log_loss", "r2")


def metric_range(name: str, task: str) -> tuple[float, float]:
    """The values `name` can take on `task`: no interval reported for it leaves this range."""
    name = name.split("/")[-1]
    if name in ("log_loss", "mse", "rmse", "mae"):
        return 0.0, np.inf
    if name == "mean_error":
        return -np.inf, np.inf
    if name == "r2":
        return -np.inf, 1.0
    if name == "brier" and task == "multiclass":
        return 0.0, 2.0  # squared distance between two points of the probability simplex
    return 0.0, 1.0


def best_of(metric: str, values) -> int | None:
    """Position of the best of `values` for `metric` (mean_error: nearest 0); None if all missing."""
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    if not np.isfinite(x).any():
        return None
    if metric.split("/")[-1] == "mean_error":
        x = np.abs(x)
    x = np.where(np.isfinite(x), x, -np.inf if higher_is_better(metric) else np.inf)
    return int(np.argmax(x) if higher_is_better(metric) else np.argmin(x))

