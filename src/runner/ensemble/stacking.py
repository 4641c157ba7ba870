"""Stacking and blending: a simple scikit-learn meta-model on members' predicted probabilities.

Stacking (lecture 000): an inner k-fold over each outer member's training rows gives every one of them an
out-of-fold prediction from a model that never saw it; those train the meta-model; its test features are the
mean of the inner models' test predictions. Blending: the meta-model trains on half of each member's validation
predictions, is validated (its regularization chosen) on the other half, the hold-out, and answers on test. The meta-model never sees a prediction of a model on its own training rows.
"""

import numpy as np
import pandas as pd

from runner.errors import RunnerError

SMALL_HOLDOUT = 100  # fewer hold-out rows than this make a blended meta-model's choice noisy


STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)  # blending: the meta-model's inverse regularization, chosen on hold-out


def meta_model(task: str, name: str, strength: float = 1.0):
    """The meta-learner: logistic regression (classification) or ridge (regression), kept simple on purpose;
    `strength` is the inverse of the regularization (logistic C; ridge alpha = 1/strength)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if name not in ("logreg", "ridge"):
        raise RunnerError(f"ensemble.meta={name!r} is not known; choose logreg or ridge")
    return Ridge(alpha=1.0 / strength) if task == "regression" else LogisticRegression(C=strength, max_iter=1000)


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
        mine = inner_of(inner, m)
        rows = np.concatenate([im.oof for _, im in mine])
        for i, im in mine:
            if np.intersect1d(im.oof, np.union1d(im.train, im.val)).size:
                raise AssertionError("an inner member trained on a row it holds out")
        order = np.argsort(rows)
        oof = np.concatenate([oof_outputs[i, : len(im.oof)] for i, im in mine])[order]
        test = np.mean([outputs[i, : len(m.test)] for i, _ in mine], axis=0)
        out.append((rows[order], oof, test))
    return out


def inner_of(inner, m) -> list[tuple]:
    """(position, inner member) of the inner members of outer member `m`: its split, seed and bag."""
    return [(i, im) for i, im in enumerate(inner) if im.fold == m.fold and im.repeat == m.repeat
            and im.seed == m.seed and im.bag == m.bag]


def stacking_records(inner, m, rows: np.ndarray) -> list[dict]:
    """split_indices.json's record of what stacking trained for outer member `m` (row numbers of the data file:
    `rows`): each inner member with the rows it held out (`held_out`: its out-of-fold predictions), and the
    meta-model, trained on those predictions of every outer training row."""
    def listed(positions):
        return rows[positions].tolist()

    mine = [im for _, im in inner_of(inner, m)]
    out = [{"role": "stacking inner member", "inner": im.inner, "train": listed(im.train), "val": listed(im.val),
            "held_out": listed(im.oof), "test": listed(im.test)} for im in mine]
    trained_on = np.sort(np.concatenate([im.oof for im in mine]))
    out.append({"role": "stacking meta-model", "train": listed(trained_on), "val": [], "test": listed(m.test),
                "features": "each training row's prediction by the inner member that held it out"})
    return out


def blending_record(m, meta: np.ndarray, held: np.ndarray, rows: np.ndarray) -> dict:
    """split_indices.json's record of blending's meta-model for member `m`: trained on the member's predictions
    of `meta`, its regularization chosen on `held` (both halves of the member's validation rows)."""
    return {"role": "blending meta-model", "train": rows[meta].tolist(), "val": rows[held].tolist(),
            "test": rows[m.test].tolist(), "features": "the member's predictions (it trained on none of these rows)"}


def fit_meta(task, classes, name, X_train, y_train, *X_tests, strength: float = 1.0):
    """Fit the meta-model on (X_train, y_train); its outputs [n, C] (regression: [n, 1]) on each of `X_tests`
    (one array when one is given)."""
    model = meta_model(task, name, strength)
    if task == "regression":
        model.fit(X_train, y_train)
        outs = [model.predict(X)[:, None] for X in X_tests]
    else:
        present = np.unique(y_train)
        outs = [np.zeros((len(X), len(classes))) for X in X_tests]
        if len(present) == 1:
            for out in outs:
                out[:, present[0]] = 1.0
        else:
            model.fit(X_train, y_train)
            for out, X in zip(outs, X_tests):
                out[:, present] = model.predict_proba(X)
    return outs[0] if len(outs) == 1 else outs


def fit_meta_on_holdout(task, classes, name, train, holdout, X_test) -> tuple[float, np.ndarray, np.ndarray]:
    """Blending's meta-model: fit on `train` (X, y) for each strength in STRENGTHS, keep the one with the least
    hold-out loss (log loss, or squared error); returns (strength, its hold-out outputs, its test outputs)."""
    best = None
    for strength in STRENGTHS:
        held, test = fit_meta(task, classes, name, train[0], train[1], holdout[0], X_test, strength=strength)
        y = holdout[1]
        loss = (np.mean((held[:, 0] - y) ** 2) if task == "regression"
                else -np.mean(np.log(np.clip(held[np.arange(len(y)), y.astype(int)], 1e-12, 1))))
        if best is None or loss < best[0]:
            best = (loss, strength, held, test)
    return best[1], best[2], best[3]


def halves(rows: np.ndarray, y: np.ndarray, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Blending's split of a member's validation rows: (meta-model training rows, hold-out rows), about half
    each, drawn from the member's seed (classes alternate between the halves when `stratify`)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    if stratify:
        order = order[np.argsort(y[rows[order]], kind="stable")]  # grouped by class, shuffled within
    meta, held = np.sort(rows[order[0::2]]), np.sort(rows[order[1::2]])
    return meta, held


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


def blending_warning(holdout_rows: int) -> str | None:
    if holdout_rows < SMALL_HOLDOUT:
        return (f"blending validates its meta-model on {holdout_rows} hold-out rows per split (half of the "
                "validation rows; the other half trains it): few enough to be noisy (ensemble=stacking uses every "
                "training row out of fold)")
    return None
