"""Per-member preprocessing: sklearn transformers fit on each member's training rows only."""

from dataclasses import dataclass

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from runner.data.datasets import Dataset
from runner.data.splits import Member


@dataclass
class Features:
    """Each member's view of the data: every row transformed by that member's preprocessing."""

    X: np.ndarray  # float32 [E, n, d]
    y: np.ndarray  # float32 [E, n]: class codes; regression: standardized with the member's train mean and sd
    names: list[str]  # the d feature names after one-hot encoding ("age", "sex=Male", ...)
    y_mean: np.ndarray  # float64 [E] (0 for classification)
    y_scale: np.ndarray  # float64 [E] (1 for classification)


def make_transformer(dataset: Dataset) -> ColumnTransformer:
    """An unfitted ColumnTransformer: numeric median-impute + standardize, categorical mode-impute + one-hot."""
    # keep_empty_features: a column missing in every training row still gets its place, so d is fixed.
    parts = []
    if dataset.numeric:
        parts.append(("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                               StandardScaler()), dataset.numeric))
    if dataset.categorical:
        # Categories from the file's domain, not the training rows: every member gets the same d columns.
        onehot = OneHotEncoder(categories=[dataset.categories[c] for c in dataset.categorical],
                               handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        parts.append(("categorical", make_pipeline(SimpleImputer(strategy="most_frequent",
                                                                 keep_empty_features=True), onehot),
                      dataset.categorical))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def feature_names(dataset: Dataset) -> list[str]:
    """The transformer's output columns in order: numeric names, then `column=value` per category."""
    return dataset.numeric + [f"{c}={v}" for c in dataset.categorical for v in dataset.categories[c]]


def member_features(dataset: Dataset, members: list[Member]) -> Features:
    """Fit one transformer per member on its training rows and transform all n rows with it."""
    names = feature_names(dataset)
    n, E = len(dataset.features), len(members)
    X = np.empty((E, n, len(names)), dtype=np.float32)
    done: dict[bytes, np.ndarray] = {}  # members sharing training rows (seeds of one split) share the fit
    for e, member in enumerate(members):
        key = member.train.tobytes()
        if key not in done:
            transformer = make_transformer(dataset).fit(dataset.features.iloc[member.train])
            done[key] = transformer.transform(dataset.features)
        X[e] = done[key]

    y = np.broadcast_to(dataset.y, (E, n)).astype(np.float64)
    y_mean, y_scale = np.zeros(E), np.ones(E)
    if dataset.task == "regression":
        for e, member in enumerate(members):
            train_y = dataset.y[member.train]
            # ddof=0 as StandardScaler does; a constant target keeps scale 1 rather than dividing by 0.
            y_mean[e], y_scale[e] = train_y.mean(), train_y.std() or 1.0
        y = (y - y_mean[:, None]) / y_scale[:, None]
    return Features(X=X, y=y.astype(np.float32), names=names, y_mean=y_mean, y_scale=y_scale)
