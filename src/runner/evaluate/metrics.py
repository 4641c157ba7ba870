"""Test metrics from predictions, computed with sklearn: whole-set scores and per-example values."""

import functools
import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from runner.evaluate.names import (  # noqa: F401  (re-exported)
    CLASSIFICATION_METRICS, DECOMPOSABLE, REGRESSION_METRICS, _check_task, best_of, default_metric,
    higher_is_better, metric_names,
)



def score(task: str, y_true, y_pred, proba=None, classes=None, names=None) -> dict[str, float]:
    """Metrics of `task` (all, or those in `names`) for one set of predictions; undefined ones are NaN."""
    _check_task(task)
    if task == "regression":
        out = _regression(np.asarray(y_true, float), np.asarray(y_pred, float))
        return out if names is None else {k: out[k] for k in names}
    classes = [str(c) for c in classes]
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    fns = _classification(task, y_true, y_pred, None if proba is None else _normalized(proba), classes)
    names = [k for k in CLASSIFICATION_METRICS if k in fns] if names is None else names
    with warnings.catch_warnings():
        # Small folds often lack a class; sklearn warns and we report its value (or NaN) anyway.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        return {k: float(fns[k]()) for k in names}


def _classification(task, y_true, y_pred, proba, classes) -> dict:
    """Each classification metric as a thunk, so callers (the bootstrap) pay only for what they ask."""
    # Binary: the positive class is the last one (for "0"/"1", "1"); multiclass: macro average.
    # labels=classes keeps a fold without the positive class from raising.
    avg = dict(average="binary", pos_label=classes[-1], labels=classes) if task == "binary" else dict(average="macro")
    prf = functools.cache(lambda: skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0, **avg))
    fns = {
        "accuracy": lambda: skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": lambda: skm.balanced_accuracy_score(y_true, y_pred),
        "precision": lambda: prf()[0],
        "recall": lambda: prf()[1],
        "f1": lambda: prf()[2],
    }
    if proba is not None:
        fns["roc_auc"] = lambda: _roc_auc(task, y_true, proba, classes)
        # Labels given explicitly so a test fold missing a class still scores.
        fns["log_loss"] = lambda: skm.log_loss(y_true, proba, labels=classes)
        if task == "binary":
            fns["brier"] = lambda: skm.brier_score_loss(y_true == classes[-1], proba[:, -1])
        else:
            fns["brier"] = lambda: np.mean(_brier_rows(y_true, proba, classes))
    return fns


def _roc_auc(task, y_true, proba, classes) -> float:
    present = [i for i, c in enumerate(classes) if (y_true == c).any()]
    if len(present) < 2:
        return float("nan")  # AUC needs both a positive and a negative example
    if task == "binary":
        return float(skm.roc_auc_score(y_true == classes[-1], proba[:, -1]))
    # One-vs-rest macro over the classes present: equals sklearn's multi_class="ovr" when all
    # classes are present, and stays defined (sklearn gives NaN) when a fold lacks one.
    return float(np.mean([skm.roc_auc_score(y_true == classes[i], proba[:, i]) for i in present]))


def _regression(y_true, y_pred) -> dict[str, float]:
    mse = float(skm.mean_squared_error(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # R² of one row is undefined
        r2 = float(skm.r2_score(y_true, y_pred))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": r2, "mean_error": float(np.mean(y_pred - y_true))}


def per_example(task: str, y_true, y_pred, proba=None, classes=None) -> dict[str, np.ndarray]:
    """Per-row values Z_i whose mean is the metric, for the decomposable metrics of `task`."""
    _check_task(task)
    if task == "regression":
        err = np.asarray(y_pred, float) - np.asarray(y_true, float)
        return {"mse": err**2, "mae": np.abs(err), "mean_error": err}
    classes = [str(c) for c in classes]
    y_true = _labels(y_true)
    out = {"accuracy": (y_true == _labels(y_pred)).astype(float)}
    if proba is not None:
        proba = _normalized(proba)
        onehot = _onehot(y_true, classes)
        eps = np.finfo(float).eps  # the same clipping as sklearn's log_loss
        out["log_loss"] = -np.log(np.clip((proba * onehot).sum(axis=1), eps, 1 - eps))
        if task == "binary":
            out["brier"] = (proba[:, -1] - onehot[:, -1]) ** 2
        else:
            out["brier"] = _brier_rows(y_true, proba, classes)
    return out


def confusion(y_true, y_pred, classes, normalize: bool = False) -> pd.DataFrame:
    """Confusion matrix (rows: true class, columns: predicted); `normalize` divides each row by its count."""
    classes = [str(c) for c in classes]
    counts = skm.confusion_matrix(_labels(y_true), _labels(y_pred), labels=classes)
    values = counts.astype(float)
    if normalize:
        with np.errstate(invalid="ignore"):
            values = values / values.sum(axis=1, keepdims=True)  # a class absent from y_true: NaN row
    frame = pd.DataFrame(values if normalize else counts, index=classes, columns=classes)
    frame.index.name, frame.columns.name = "true", "predicted"
    return frame


def proba_columns(classes) -> list[str]:
    """The probability column names of a predictions table: p_<class> in `classes` order."""
    return [f"p_{c}" for c in classes]


def prediction_arrays(predictions: pd.DataFrame, task: str, classes):
    """y_true, y_pred and proba (or None) of a predictions table."""
    if task == "regression":
        return predictions["y_true"].to_numpy(float), predictions["y_pred"].to_numpy(float), None
    cols = proba_columns(classes)
    proba = predictions[cols].to_numpy(float) if all(c in predictions for c in cols) else None
    return _labels(predictions["y_true"]), _labels(predictions["y_pred"]), proba


def score_members(predictions: pd.DataFrame, task: str, classes=None) -> pd.DataFrame:
    """One row per member (index `member`), one column per metric, each scored on that member's test rows."""
    groups = predictions.groupby("member", sort=True)
    rows = {m: score(task, *prediction_arrays(g, task, classes), classes) for m, g in groups}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "member"
    return frame


def _labels(y) -> np.ndarray:
    # A predictions.csv read back parses "0"/"1" as integers; labels are compared as strings.
    return np.asarray(y).astype(str)


def _normalized(proba) -> np.ndarray:
    # Probabilities round-tripped through CSV sum to 1 only approximately; sklearn warns on that.
    # Rows already summing to 1 are left alone: dividing would perturb ties and so the AUC.
    p = np.asarray(proba, dtype=float)
    sums = p.sum(axis=1, keepdims=True)
    return p if np.allclose(sums, 1.0, rtol=0, atol=1e-9) else p / sums


def _onehot(y_true, classes) -> np.ndarray:
    return (y_true[:, None] == np.asarray(classes)[None, :]).astype(float)


def _brier_rows(y_true, proba, classes) -> np.ndarray:
    return ((proba - _onehot(y_true, classes)) ** 2).sum(axis=1)
