"""Stacking and blending: a simple scikit-learn meta-model on members' predicted probabilities.

Stacking (lecture 000): an inner k-fold over each outer member's training rows gives every one of them an
out-of-fold prediction from a model that never saw it; those train the meta-model; its test features are the
mean of the inner models' test predictions. Blending: the meta-model trains on the members' validation
predictions and answers on test. The meta-model never sees a prediction of a model on its own training rows.
"""

import numpy as np
import pandas as pd

from runner.errors import RunnerError

SMALL_HOLDOUT = 100  # fewer validation rows than this make a blended meta-model noisy


def meta_model(task: str, name: str):
    """The meta-learner: logistic regression (classification) or ridge (regression), kept simple on purpose."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if name not in ("logreg", "ridge"):
        raise RunnerError(f"ensemble.meta={name!r} is not known; choose logreg or ridge")
    return Ridge() if task == "regression" else LogisticRegression(max_iter=1000)


def features(proba: np.ndarray, inputs: np.ndarray | None) -> np.ndarray:
    """Meta-features: the probabilities (the last class dropped: the rest determine it), then the inputs."""
    parts = [proba[:, :-1] if proba.shape[1] > 1 else proba]
    return np.concatenate(parts + ([inputs] if inputs is not None else []), axis=1)


def out_of_fold(inner, outputs: np.ndarray, oof_outputs: np.ndarray, outer) -> list[tuple]:
    """For each outer member: (rows, out-of-fold outputs [rows, C], test features [test, C]) from its inner members.

    `outputs` [I, max test, C] are the inner members' predictions on their outer test rows, `oof_outputs`
    [I, max oof, C] on the rows each held out. Each training row's feature comes from the one inner member
    that held it out, which never trained on it (checked).
    """
    out = []
    for m in outer:
        mine = [(i, im) for i, im in enumerate(inner) if im.fold == m.fold and im.repeat == m.repeat
                and im.seed == m.seed and im.bag == m.bag]
        rows = np.concatenate([im.oof for _, im in mine])
        for i, im in mine:
            if np.intersect1d(im.oof, np.union1d(im.train, im.val)).size:
                raise AssertionError("an inner member trained on a row it holds out")
        order = np.argsort(rows)
        oof = np.concatenate([oof_outputs[i, : len(im.oof)] for i, im in mine])[order]
        test = np.mean([outputs[i, : len(m.test)] for i, _ in mine], axis=0)
        out.append((rows[order], oof, test))
    return out


def fit_meta(task, classes, name, X_train, y_train, X_test) -> np.ndarray:
    """Fit the meta-model on (X_train, y_train) and return its test outputs [n, C] (regression: [n, 1])."""
    model = meta_model(task, name)
    if task == "regression":
        return model.fit(X_train, y_train).predict(X_test)[:, None]
    proba = np.zeros((len(X_test), len(classes)))
    present = np.unique(y_train)
    if len(present) == 1:
        proba[:, present[0]] = 1.0
        return proba
    proba[:, present] = model.fit(X_train, y_train).predict_proba(X_test)
    return proba


def table(m, rows, outputs: np.ndarray, dataset) -> pd.DataFrame:
    """A predictions table (predictions.csv's format) of one meta-model's outputs (target units) for member m."""
    frame = pd.DataFrame({**m.coordinates(), "row": rows})
    if dataset.classes:
        labels = np.asarray(dataset.classes)
        frame["y_true"], frame["y_pred"] = labels[dataset.y[rows]], labels[outputs.argmax(1)]
        for j, c in enumerate(dataset.classes):
            frame[f"p_{c}"] = outputs[:, j]
    else:
        frame["y_true"], frame["y_pred"] = dataset.y[rows], outputs[:, 0]
    return frame


def blending_warning(val_rows: int) -> str | None:
    if val_rows < SMALL_HOLDOUT:
        return (f"blending trains its meta-model on {val_rows} validation rows per split: few enough to be noisy "
                "(ensemble=stacking uses every training row out of fold)")
    return None
