"""dataset=python: rows from the user's own function (dataset.loader, called with dataset.args).

It returns (X, y) arrays, a table [n, d] or images, or a DataFrame with dataset.target naming the column to
predict, which then goes through the CSV rules. Row numbers in the run's files are positions in what it returned.
"""

import dataclasses

import numpy as np
import pandas as pd

from runner import user_code
from runner.config.schema import DatasetConfig
from runner.data import images
from runner.data.dataset import MIN_ROWS, Dataset
from runner.errors import RunnerError


def load_python(cfg: DatasetConfig, load_table) -> Dataset:
    """The user's rows as a Dataset; `load_table(cfg, frame, whose, lines=False)` reads a DataFrame by the CSV
    rules, naming a bad cell by its row."""
    loader = user_code.load(cfg.loader, "dataset.loader", callable, "a function")
    name = getattr(loader, "__name__", "python")
    try:
        out = loader(**dict(cfg.args or {}))
    except RunnerError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's function: any failure is theirs to fix)
        raise RunnerError(f"dataset.loader={cfg.loader}: calling it failed: {type(exc).__name__}: {exc} "
                          "(set dataset.args)") from None
    if isinstance(out, pd.DataFrame):
        return dataclasses.replace(load_table(cfg, out.reset_index(drop=True), f"the table dataset.loader="
                                              f"{cfg.loader} returned", lines=False), name=name)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise RunnerError(f"dataset.loader={cfg.loader} returned {type(out).__name__}; return (X, y) arrays or a "
                          "pandas DataFrame (with dataset.target naming the column to predict)")
    X, y = np.asarray(out[0]), np.asarray(out[1])
    _need(y.ndim == 1 and len(y) == len(X), f"dataset.loader={cfg.loader}: X has {len(X)} rows but y has shape "
          f"{y.shape}; return one target value per row")
    if X.ndim == 2:
        _need(X.dtype.kind in "iufb", f"dataset.loader={cfg.loader}: X holds {X.dtype} values; return numbers "
              "(or a DataFrame, whose text columns are read as categories)")
        target = cfg.target or "y"
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
        _need(target not in frame.columns, f"dataset.target={target} names a feature x<i>; use another name")
        frame[target] = y
        return dataclasses.replace(load_table(dataclasses.replace(cfg, target=target), frame,
                                              f"what dataset.loader={cfg.loader} returned", lines=False), name=name)
    return _images(cfg, X, y, name)


def _images(cfg: DatasetConfig, X: np.ndarray, y: np.ndarray, name: str) -> Dataset:
    """[n, H, W], [n, C, H, W] or [n, H, W, C] (C = 1 or 3) as the images path reads an .npz."""
    if X.ndim == 3:
        X = X[:, None]
    elif X.ndim == 4 and X.shape[1] not in (1, 3) and X.shape[3] in (1, 3):
        X = X.transpose(0, 3, 1, 2)
    _need(X.ndim == 4 and X.shape[1] in (1, 3), f"dataset.loader={cfg.loader}: X has shape {list(X.shape)}; "
          "return a table [n, d] or images [n, H, W], [n, C, H, W] or [n, H, W, C] with 1 or 3 channels")
    _need(len(X) >= MIN_ROWS, f"dataset.loader={cfg.loader} returned {len(X)} rows; runner needs at least "
          f"{MIN_ROWS}")
    pixels = images._pixels(np.ascontiguousarray(X), f"the images of dataset.loader={cfg.loader}")
    codes, classes = images._labels(y, name)
    _need(len(np.unique(codes)) >= 2, f"dataset.loader={cfg.loader}: every image has one label; classification "
          "needs at least 2")
    return Dataset(name=name, target="label", task="binary" if len(classes) == 2 else "multiclass", features=None,
                   y=codes, classes=classes, images=pixels)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise RunnerError(message)
