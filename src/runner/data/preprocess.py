"""Per-member preprocessing as small fitted arrays: every row is stored once, each member's fit on its training rows."""

from dataclasses import dataclass, replace

import numpy as np

from runner.data.dataset import Dataset
from runner.data.splits import Member

CHUNK_ROWS = 4096  # image statistics are accumulated over this many rows at a time


@dataclass
class Preprocessed:
    """The inputs once (`X`) and each member's preprocessing: x' = (x, or `fill` where missing, - shift) / scale.

    Tables: numeric columns are median-imputed and standardized, categorical columns are one-hot over the
    file's domain and imputed with the training rows' most frequent value (sklearn's SimpleImputer,
    StandardScaler and OneHotEncoder, fit per member); with dataset.encoding=codes each categorical column is
    one integer code instead (its index in the file's sorted domain, as sklearn's OrdinalEncoder; the
    domain's size for a value never seen), after the numeric columns, for a model's embedding layers. Images:
    per-channel mean and sd of the member's training pixels. Every statistic comes from the member's training
    rows only.
    """

    X: np.ndarray  # [n, d] float32, NaN where missing (all of a categorical's columns); images [n, C, H, W]
    fill: np.ndarray | None  # [E, d] value of a missing entry; None when nothing is missing
    shift: np.ndarray  # float32 [E, d] (tables) or [E, C, 1, 1] (images)
    scale: np.ndarray  # float32, same shape, > 0
    used: np.ndarray | None  # [E, d] bool: the column takes a value in the member's training rows (tables)
    names: list[str]  # the d feature names ("age", "sex=Male", ...); images: []
    y: np.ndarray  # float32 [n]: class codes, or the regression target in its own units
    y_mean: np.ndarray  # float64 [E]: regression targets are standardized per member (0 for classification)
    y_scale: np.ndarray  # float64 [E] (1 for classification)

    @property
    def members(self) -> int:
        return len(self.shift)

    def transform(self, e: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Member e's preprocessed inputs of `rows` (all rows by default), float32."""
        x = self.X if rows is None else self.X[rows]
        return standardize(x.astype(np.float32), None if self.fill is None else self.fill[e], self.shift[e],
                           self.scale[e])

    def __getitem__(self, e: int) -> np.ndarray:
        """Member e's preprocessed inputs of every row as an [n, features] matrix (images flattened)."""
        return self.transform(e).reshape(len(self.X), -1)

    def take(self, members: list[int]) -> "Preprocessed":
        """The preprocessing of `members` only, in that order (the rows `X` stay shared)."""
        pick = lambda a: None if a is None else a[members]  # noqa: E731
        return replace(self, fill=pick(self.fill), shift=self.shift[members], scale=self.scale[members],
                       used=pick(self.used), y_mean=self.y_mean[members], y_scale=self.y_scale[members])

    def nbytes(self) -> int:
        """Bytes held: the shared inputs plus every member's fitted arrays."""
        arrays = (self.X, self.fill, self.shift, self.scale, self.used, self.y, self.y_mean, self.y_scale)
        return sum(a.nbytes for a in arrays if a is not None)

    def arrays(self) -> dict:
        """The fitted per-member arrays (what a checkpoint keeps so that `predict` can apply them)."""
        out = {"shift": self.shift, "scale": self.scale, "y_mean": self.y_mean, "y_scale": self.y_scale}
        if self.fill is not None:
            out["fill"] = self.fill
        if self.used is not None:
            out["used"] = self.used
        return out


def standardize(x: np.ndarray, fill: np.ndarray | None, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x' = (x, or `fill` where missing, - shift) / scale, float32: fitted preprocessing applied to raw rows (members
    broadcast along any leading axis the fitted arrays have). The engine applies the same map on the device, fused
    as x·(1/scale) - shift/scale (engine/inputs.MemberInputs; tests/test_preprocess.py holds them equal)."""
    if fill is not None:
        x = np.where(np.isnan(x), fill, x)
    return ((x - shift) / scale).astype(np.float32)


def feature_names(dataset: Dataset) -> list[str]:
    """The input columns in order: numeric names, then `column=value` per category of the file's domain (codes:
    one column per categorical column, its name)."""
    if dataset.codes:
        return dataset.numeric + dataset.categorical
    return dataset.numeric + [f"{c}={v}" for c in dataset.categorical for v in dataset.categories[c]]


def input_width(dataset: Dataset) -> int:
    """Inputs per table row: the numeric columns, then a code or the one-hot columns of each categorical one."""
    return len(feature_names(dataset))


def make_transformer(dataset: Dataset):
    """The same preprocessing as one unfitted sklearn ColumnTransformer (for sklearn pipelines and tests):
    numeric median-impute + standardize, categorical mode-impute + one-hot over the file's domain (codes:
    OrdinalEncoder over it)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    parts = []
    if dataset.numeric:
        parts.append(("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                               StandardScaler()), dataset.numeric))
    if dataset.categorical:
        domains = [dataset.categories[c] for c in dataset.categorical]
        encoder = (OrdinalEncoder(categories=domains, dtype=np.float32) if dataset.codes else
                   OneHotEncoder(categories=domains, handle_unknown="ignore", sparse_output=False, dtype=np.float32))
        parts.append(("categorical", make_pipeline(SimpleImputer(strategy="most_frequent",
                                                                 keep_empty_features=True), encoder),
                      dataset.categorical))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def preprocess(dataset: Dataset, members: list[Member]) -> Preprocessed:
    """Fit each member's preprocessing on its training rows (members sharing rows share the fit)."""
    if dataset.images is not None:
        X, names, fit = dataset.images, [], _image_fit
    else:
        X, names, fit = _table_matrix(dataset), feature_names(dataset), _table_fit(dataset)
    fits: dict[bytes, tuple] = {}
    for m in members:
        key = m.train.tobytes()
        if key not in fits:
            fits[key] = fit(X, m.train)
    fill, shift, scale, used = (np.stack(a) if a[0] is not None else None
                                for a in zip(*(fits[m.train.tobytes()] for m in members)))
    if fill is not None and not np.isnan(X).any():
        fill = None

    E = len(members)
    y_mean, y_scale = np.zeros(E), np.ones(E)
    if dataset.task == "regression":
        for e, m in enumerate(members):
            train_y = dataset.y[m.train]
            # ddof=0 as StandardScaler does; a constant target keeps scale 1 rather than dividing by 0.
            y_mean[e], y_scale[e] = train_y.mean(), train_y.std() or 1.0
    return Preprocessed(X=X, fill=fill, shift=shift.astype(np.float32), scale=scale.astype(np.float32), used=used,
                        names=names, y=dataset.y.astype(np.float32), y_mean=y_mean, y_scale=y_scale)


def restore(dataset: Dataset, arrays: dict) -> Preprocessed:
    """The dataset's rows with fitted arrays saved earlier (`Preprocessed.arrays()`, as a checkpoint keeps them)."""
    X = dataset.images if dataset.images is not None else _table_matrix(dataset)
    names = [] if dataset.images is not None else feature_names(dataset)
    return Preprocessed(X=X, fill=arrays.get("fill"), shift=arrays["shift"], scale=arrays["scale"],
                        used=arrays.get("used"), names=names, y=dataset.y.astype(np.float32),
                        y_mean=arrays["y_mean"], y_scale=arrays["y_scale"])


def _table_matrix(dataset: Dataset) -> np.ndarray:
    """[n, d] float32: numeric values, then one-hot columns (or codes); NaN where a value is missing."""
    return table_matrix(dataset.features, dataset.numeric, dataset.categorical, dataset.categories, dataset.codes)[0]


def table_matrix(frame, numeric: list[str], categorical: list[str], categories: dict[str, list],
                 codes: bool) -> tuple[np.ndarray, dict[str, list]]:
    """[n, d] float32 inputs of a table's rows as training builds them: numeric values, then each categorical
    column one-hot over its domain (a value outside it: all zeros) or as its code (outside it: the unknown code,
    the domain's size); NaN where a value is missing. Also each column's values outside its domain."""
    parts = [frame[numeric].to_numpy(np.float64)] if numeric else []
    unseen = {}
    for c in categorical:
        domain = np.asarray(categories[c], dtype=object)
        values = frame[c].to_numpy(object)
        missing = frame[c].isna().to_numpy()
        onehot = (values[:, None] == domain[None, :]).astype(np.float64)
        outside = ~onehot.any(1) & ~missing
        if outside.any():
            unseen[c] = list(dict.fromkeys(values[outside]))
        if codes:
            column = np.where(outside, len(domain), onehot.argmax(1)).astype(np.float64)[:, None]
        else:
            column = onehot
        column[missing] = np.nan
        parts.append(column)
    matrix = np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)
    return matrix, unseen


def _table_fit(dataset: Dataset):
    """The per-member fit for a table: (fill [d], shift [d], scale [d], used [d]) from its training rows."""
    numeric = len(dataset.numeric)
    blocks, start = [], numeric
    for c in dataset.categorical:
        size = 1 if dataset.codes else len(dataset.categories[c])
        # sklearn's most_frequent breaks ties by the smallest value (compared as the strings it holds).
        order = np.argsort(np.asarray(dataset.categories[c], dtype=str), kind="stable")
        blocks.append((start, size, order))
        start += size
    plain = dataset.features[dataset.numeric].to_numpy(np.float64)

    def fit(X: np.ndarray, train: np.ndarray):
        d = X.shape[1]
        fill, shift, scale, used = np.zeros(d), np.zeros(d), np.ones(d), np.ones(d, dtype=bool)
        if numeric:
            values = plain[train]
            missing = np.isnan(values)
            present = ~missing.all(0)
            # SimpleImputer(median, keep_empty_features=True): a column with no values is filled with 0.
            fill[:numeric][present] = np.nanmedian(values[:, present], axis=0)
            imputed = np.where(missing, fill[:numeric], values)
            shift[:numeric] = imputed.mean(0)
            sd = imputed.std(0)
            # StandardScaler keeps scale 1 for a constant column (its _handle_zeros_in_scale).
            scale[:numeric] = np.where(sd < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(shift[:numeric]), 1),
                                       1.0, sd)
        for begin, size, order in blocks:
            block = X[train, begin : begin + size]
            if dataset.codes:  # the codes' counts: the one-hot block's column sums
                column = block[:, 0]
                counts = np.bincount(column[~np.isnan(column)].astype(np.int64), minlength=len(order))
                if counts.sum() > 0:
                    fill[begin] = order[np.argmax(counts[order])]
                continue
            counts = np.nansum(block, axis=0)
            if counts.sum() > 0:
                mode = order[np.argmax(counts[order])]  # the first maximum in string order
                fill[begin + mode] = 1.0
            # The member has seen a category if a training row holds it (after imputation).
            used[begin : begin + size] = (counts > 0) | (fill[begin : begin + size] > 0)
        return fill, shift, scale, used

    return fit


def _image_fit(X: np.ndarray, train: np.ndarray):
    """Per-channel mean and sd (ddof=0) of the training images' pixels, in the stored units."""
    channels = X.shape[1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(train), CHUNK_ROWS):
        chunk = X[train[start : start + CHUNK_ROWS]].astype(np.float64)
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    sd = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    sd = np.where(sd > 0, sd, 1.0)
    return None, mean.reshape(channels, 1, 1), sd.reshape(channels, 1, 1), None
