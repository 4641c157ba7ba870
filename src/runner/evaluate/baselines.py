"""Baseline predictions tables (majority/mean, logistic/linear regression, 3-NN) fit on each member's train rows."""

import numpy as np
import pandas as pd

from runner.errors import RunnerError
from runner.evaluate.metrics import proba_columns

SKLEARN_BASELINES = ("logreg", "knn")


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
    """Fit sklearn baseline `name` ("logreg" or "knn") on X[e][train] of each split's first member; predict its test rows
    (X[e]: member e's preprocessed [n, d] inputs, an array or computed on request)."""
    if name not in SKLEARN_BASELINES:
        raise RunnerError(f"unknown baseline {name!r}; choose one of: majority, {', '.join(SKLEARN_BASELINES)}")
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    y = np.asarray(y)
    members = one_per_split(members)
    parts = []
    for m in members:
        Xe, train, test = np.asarray(X[m.index], dtype=float), np.asarray(m.train), np.asarray(m.test)
        k = min(3, len(train))  # a tiny training set cannot supply 3 neighbours
        if task == "regression":
            est = LinearRegression() if name == "logreg" else KNeighborsRegressor(n_neighbors=k)
            pred = est.fit(Xe[train], y[train].astype(float)).predict(Xe[test])
            parts.append(_table(m, test, y, pred, None, task, classes, row_ids))
            continue
        codes = _codes(y[train], classes)
        est = LogisticRegression(max_iter=1000) if name == "logreg" else KNeighborsClassifier(n_neighbors=k)
        if len(np.unique(codes)) == 1:  # LogisticRegression refuses one class; it would predict it anyway
            proba = np.zeros((len(test), len(classes)))
            proba[:, codes[0]] = 1.0
        else:
            seen = est.fit(Xe[train], codes).predict_proba(Xe[test])
            proba = np.zeros((len(test), len(classes)))
            proba[:, est.classes_] = seen  # classes missing from these train rows get probability 0
        parts.append(_table(m, test, y, proba.argmax(axis=1), proba, task, classes, row_ids))
    return pd.concat(parts, ignore_index=True)


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
