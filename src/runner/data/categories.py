"""Categorical values as the strings a run one-hot encodes: shared by dataset loading and `runner predict`
(outside `runner.data`, whose package imports sklearn)."""

import numpy as np
import pandas as pd


def integers(values: pd.Series) -> pd.Series:
    """Integer-valued floats (ints read with NaN nearby) as int64, so 1.0 prints as '1'."""
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values, 1) == 0):
        return values.astype("int64")
    return values


def as_category(col: pd.Series) -> pd.Series:
    """Non-missing values as str, missing as NaN: one type per column, matching `_domain`."""
    present = col.dropna()
    out = pd.Series(np.nan, index=col.index, dtype=object)
    out[present.index] = integers(present).astype(str).to_numpy(dtype=object)
    return out
