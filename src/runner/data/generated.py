"""Tables made in code instead of read from a file: scikit-learn's diabetes data and a two-regime toy regression."""

import numpy as np
import pandas as pd

PIECEWISE_ROWS = 400


def diabetes() -> pd.DataFrame:
    """scikit-learn's bundled diabetes data: 442 patients, 10 standardized features, `progression` a year later."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    return bunch.frame.rename(columns={"target": "progression"})


def piecewise(rows: int = PIECEWISE_ROWS, seed: int = 0) -> pd.DataFrame:
    """One input x ~ U(0, 2) and a target from two regimes (the lecture's mixture-of-experts example): a
    polynomial for x < 1 and a line for x ≥ 1, plus N(0, 0.05²) noise; `regime` says which (not a feature)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 2.0, rows)
    curve = 4.0 * (x - 0.5) ** 2 - 1.0
    line = 2.0 - 1.5 * (x - 1.0)
    y = np.where(x < 1.0, curve, line) + rng.normal(0.0, 0.05, rows)
    return pd.DataFrame({"x": x, "y": y, "regime": (x >= 1.0).astype(int)})


GENERATED = {"diabetes": diabetes, "piecewise": piecewise}
