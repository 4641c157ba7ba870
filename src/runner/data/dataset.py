"""A dataset ready for splitting: a table (features with column roles) or images, and the encoded target."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_ROWS = 10


@dataclass
class Dataset:
    """Data ready for splitting: a table (features with column roles) or images, and the encoded target."""

    name: str
    target: str
    task: str  # "binary" | "multiclass" | "regression"
    features: pd.DataFrame | None  # tables: numeric columns float64; categorical columns object (str, NaN missing)
    y: np.ndarray  # classification: int64 class codes 0..K-1; regression: float64
    classes: list[str]  # class labels in code order; [] for regression
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    categories: dict[str, list] = field(default_factory=dict)  # categorical column -> sorted distinct values (str)
    weights: np.ndarray | None = None  # per-row sample weights (dataset.weight), float64
    positive: str | None = None  # binary: the label of the positive class (code 1); None otherwise
    images: np.ndarray | None = None  # images: [n, C, H, W], uint8 (0..255) or float32 (0..1)
    source_rows: np.ndarray | None = None  # images cut to dataset.limit: each kept image's row in its source
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why runner left it out ("one value", ...)
    codes: bool = False  # categorical columns as one integer code each (dataset.encoding), else one-hot

    @property
    def cardinalities(self) -> list[int]:
        """Codes each categorical column takes: its categories, then one code for a value never seen (predict)."""
        return [len(self.categories[c]) + 1 for c in self.categorical]

    def dropped_note(self) -> str:
        """The columns runner dropped and why, as the header says it: 'dropped: name (text, unique per row)'."""
        return "dropped: " + ", ".join(f"{c} ({why})" for c, why in self.dropped.items()) if self.dropped else ""

    @property
    def rows(self) -> np.ndarray:
        """The row number of each example in its source (a table's index), for the run's files."""
        if self.features is not None:
            return self.features.index.to_numpy()
        return self.source_rows if self.source_rows is not None else np.arange(len(self.y))
