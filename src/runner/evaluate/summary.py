"""The `over`, `metrics` and `baselines` parts of results.json: each test metric as mean ± 1.96·SE."""

import math

import numpy as np
import pandas as pd

from runner.evaluate.metrics import prediction_arrays, per_example, score, score_members
from runner.evaluate.resample import bootstrap_se
from runner.evaluate.stats import Z95, mean_ci, nadeau_bengio_se, per_example_ci, t975

# Efron & Tibshirani: 50–200 resamples estimate an SE well; each costs one scoring of the test set.
BOOTSTRAP_RESAMPLES = 100


def summarize(predictions: pd.DataFrame, task: str, classes=None, members=None, over: str = "",
              baselines: dict[str, pd.DataFrame] | None = None, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """{"over", "metrics", "baselines"} of results.json; one member: intervals over its test rows."""
    n_members = predictions["member"].nunique()
    if n_members == 1:
        over = f"{len(predictions)} test rows"  # one model: the only spread left is across test examples
    elif not over:
        over = f"{n_members} members"
    return {
        "over": over,
        "metrics": summarize_table(predictions, task, classes, members, resamples),
        "baselines": {name: summarize_table(table, task, classes, members, resamples)
                      for name, table in (baselines or {}).items()},
    }


def summarize_table(predictions: pd.DataFrame, task: str, classes=None, members=None,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, dict]:
    """{"test/<metric>": mean_ci dict} for one predictions table (model or baseline)."""
    per_member = score_members(predictions, task, classes)
    if len(per_member) == 1:
        return _over_test_rows(predictions, task, classes, resamples)
    out = {f"test/{name}": mean_ci(per_member[name]) for name in per_member.columns}
    sizes = _nadeau_bengio_sizes(members)
    if sizes is not None:
        for name, d in out.items():
            se = nadeau_bengio_se(per_member[name.split("/", 1)[1]], *sizes)
            d["se_nb"] = se
            d["ci95_nb"] = None if se is None else [d["mean"] - Z95 * se, d["mean"] + Z95 * se]
    folds = _fold_means(per_member, predictions)
    if folds is not None:
        for name, d in out.items():
            d["over_folds"] = mean_ci(folds[name.split("/", 1)[1]])
    return out


def _fold_means(per_member: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame | None:
    """Scores averaged over the seeds of each (repeat, fold), when folds hold several seeds.

    Seeds of one fold share its test rows, so their scores are correlated; the spread of the fold
    means is the more conservative ± (reported beside the per-member one).
    """
    keys = predictions.groupby("member")[["repeat", "fold"]].first().loc[per_member.index]
    n_folds = len(keys.drop_duplicates())
    if n_folds < 2 or n_folds == len(per_member):
        return None
    return per_member.groupby([keys["repeat"], keys["fold"]]).mean()


def _nadeau_bengio_sizes(members) -> tuple[float, float] | None:
    """(n_train, n_test) for the Nadeau–Bengio correction, or None unless k-fold was repeated."""
    if not members or len({m.repeat for m in members}) < 2:
        return None
    # A fold's learner sees every non-test row (val rows pick the epoch), so both count as training.
    n_train = float(np.mean([len(m.train) + len(m.val) for m in members]))
    n_test = float(np.mean([len(m.test) for m in members]))
    return n_train, n_test


def _over_test_rows(predictions, task, classes, resamples) -> dict[str, dict]:
    """Intervals for a single member: per-example where the metric is a mean, else a seeded bootstrap."""
    y_true, y_pred, proba = prediction_arrays(predictions, task, classes)
    point = score(task, y_true, y_pred, proba, classes)
    z = per_example(task, y_true, y_pred, proba, classes)
    rest = [name for name in point if name not in z]
    boot = bootstrap_se(task, y_true, y_pred, proba, classes, rest, resamples)
    out = {}
    for name, value in point.items():
        if name in z:
            d = per_example_ci(z[name])
            d["interval"] = "test rows"
        else:
            d = _from_se(value, boot[name], len(y_true))
            d["interval"] = f"bootstrap ({resamples} resamples of the test rows, seed 0)"
        out[f"test/{name}"] = d
    return out


def _from_se(mean: float, se: float | None, n: int) -> dict:
    """A mean_ci-shaped dict from a point value and an SE estimated another way (sd = se·√n keeps se = sd/√n)."""
    if not math.isfinite(mean):
        return mean_ci([])
    if se is None:
        return {"mean": mean, "sd": None, "se": None, "ci95": None, "ci95_t": None, "n": n}
    t = t975(n - 1)
    return {"mean": mean, "sd": se * math.sqrt(n), "se": se, "ci95": [mean - Z95 * se, mean + Z95 * se],
            "ci95_t": [mean - t * se, mean + t * se], "n": n}
