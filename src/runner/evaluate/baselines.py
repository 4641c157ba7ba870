"""Baseline predictions tables (majority/mean, logistic/linear regression, 3-NN, histogram gradient boosting) fit on
each member's train rows."""

import numpy as np
import pandas as pd

from runner.errors import RunnerError
from runner.evaluate.metrics import proba_columns

SKLEARN_BASELINES = ("logreg", "knn", "hgb")
SMALL_TABLE_ROWS = 10_000  # training rows below which the sklearn baselines fit on one thread


def one_per_split(members) -> list:
    """The first member of each split (same train and test rows): baselines depend on the rows, not the seed."""
    seen, out = set(), []
    for m in members:
        key = (np.asarray(m.train).tobytes(), np.asarray(m.test).tobytes())  # bags of one fold differ in train
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def majority_predictions(y, members, task: str, classes=None, row_ids=None, constant: bool = False) -> pd.DataFrame:
    """Predict each split's training majority class (training class frequencies as probabilities) or training mean.

    One table per split, not per seed: a baseline has no seed, and copies would deflate its interval.
    `constant` (leave-one-out, pooled): every row gets the mean of the splits' training frequencies as its
    probabilities. Each fold's frequencies move with the one row it leaves out, against that row's label,
    so pooled they would rank rows (AUC 0.295 on heart) where a majority guess ranks nothing (AUC 0.5).
    """
    y = np.asarray(y)
    members = one_per_split(members)
    parts = []
    for m in members:
        test = np.asarray(m.test)
        if task == "regression":
            pred = np.full(len(test), float(np.mean(y[m.train].astype(float))))
            parts.append(_table(m, test, y, pred, None, task, classes, row_ids))
            continue
        codes = _codes(y[m.train], classes)
        freq = np.bincount(codes, minlength=len(classes)) / len(codes)
        proba = np.tile(freq, (len(test), 1))
        parts.append(_table(m, test, y, proba.argmax(axis=1), proba, task, classes, row_ids))
    table = pd.concat(parts, ignore_index=True)
    if constant and task != "regression":
        columns = proba_columns(classes)
        table[columns] = np.tile(table[columns].mean().to_numpy(), (len(table), 1))
    return table


def sklearn_predictions(name: str, X, y, members, task: str, classes=None, row_ids=None) -> pd.DataFrame:
    """Fit sklearn baseline `name` (one of SKLEARN_BASELINES) on X[e][train] of each split's first member; predict
    its test rows (X[e]: member e's preprocessed [n, d] inputs, an array or computed on request).

    hgb is scikit-learn's HistGradientBoosting at its defaults, except that it stops early on the split's own
    validation rows (the rows runner's members stop on) in place of its internal random 10%; a split without
    validation rows (eval.refit, eval.val_fraction=0) runs its default 100 iterations."""
    if name not in SKLEARN_BASELINES:
        raise RunnerError(f"unknown baseline {name!r}; choose one of: majority, {', '.join(SKLEARN_BASELINES)}")
    from threadpoolctl import threadpool_limits

    y = np.asarray(y)
    members = one_per_split(members)
    # HistGradientBoosting's OpenMP threads cost more than they save on a small table: 0.06 s a fit on one
    # thread, 5 s on two cores shared with other work (they spin while waiting for each other).
    small = max(len(m.train) for m in members) < SMALL_TABLE_ROWS
    with threadpool_limits(limits=1 if small else None, user_api="openmp"):
        return _fit_each(name, X, y, members, task, classes, row_ids)


def _fit_each(name: str, X, y, members, task: str, classes, row_ids) -> pd.DataFrame:
    """sklearn_predictions' tables, one split at a time."""
    parts = []
    for m in members:
        Xe, train, test = np.asarray(X[m.index], dtype=float), np.asarray(m.train), np.asarray(m.test)
        if task == "regression":
            fit = {"X_val": Xe[m.val], "y_val": y[m.val].astype(float)} if name == "hgb" and len(m.val) else {}
            est = _estimator(name, task, len(train), bool(fit))
            pred = est.fit(Xe[train], y[train].astype(float), **fit).predict(Xe[test])
            parts.append(_table(m, test, y, pred, None, task, classes, row_ids))
            continue
        codes = _codes(y[train], classes)
        proba = np.zeros((len(test), len(classes)))
        if len(np.unique(codes)) == 1:  # LogisticRegression refuses one class; it would predict it anyway
            proba[:, codes[0]] = 1.0
        else:
            fit = {}
            if name == "hgb":
                val = np.asarray(m.val)
                val = val[np.isin(_codes(y[val], classes), codes)]  # a class it never trained on cannot score
                if len(val):
                    fit = {"X_val": Xe[val], "y_val": _codes(y[val], classes)}
            est = _estimator(name, task, len(train), bool(fit))
            seen = est.fit(Xe[train], codes, **fit).predict_proba(Xe[test])
            proba[:, est.classes_] = seen  # classes missing from these train rows get probability 0
        parts.append(_table(m, test, y, proba.argmax(axis=1), proba, task, classes, row_ids))
    return pd.concat(parts, ignore_index=True)


def _estimator(name: str, task: str, n_train: int, stop_early: bool = False):
    """The unfitted sklearn estimator of baseline `name` for `task` (hgb: stopping early on the validation rows
    given to fit, or not at all)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    regression = task == "regression"
    if name == "logreg":
        return LinearRegression() if regression else LogisticRegression(max_iter=1000)
    if name == "knn":
        k = min(3, n_train)  # a tiny training set cannot supply 3 neighbours
        return KNeighborsRegressor(n_neighbors=k) if regression else KNeighborsClassifier(n_neighbors=k)
    # Its own early_stopping="auto" turns on only above 10,000 rows, on a random 10% of the training rows.
    hgb = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    return hgb(early_stopping=stop_early, random_state=0)


def _codes(y, classes) -> np.ndarray:
    # Accept integer class codes (positions in `classes`) or the labels themselves.
    y = np.asarray(y)
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(y == np.round(y))):
        return y.astype(int)
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in y], dtype=int)


def _table(m, test, y, pred, proba, task, classes, row_ids) -> pd.DataFrame:
    """A predictions table for member `m` in the engine's format (`row`: data row number or position)."""
    rows = test if row_ids is None else np.asarray(row_ids)[test]
    frame = pd.DataFrame({**m.coordinates(), "row": rows})
    if task == "regression":
        frame["y_true"], frame["y_pred"] = y[test].astype(float), np.asarray(pred, float)
        return frame
    labels = np.array([str(c) for c in classes])
    frame["y_true"], frame["y_pred"] = labels[_codes(y[test], classes)], labels[pred]
    for col, p in zip(proba_columns(classes), proba.T):
        frame[col] = p
    return frame
