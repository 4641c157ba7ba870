"""Read a CSV table into a Dataset: the feature columns with their roles and the encoded target."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from runner.config import DatasetConfig, Task
from runner.categories import as_category as _as_category, integers as _integers
from runner.data.generated import GENERATED
from runner.errors import RunnerError
from runner.paths import bundled_data

MIN_ROWS = 10
MAX_CLASSES = 20  # an integer target with at most this many distinct values is read as class labels


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
    images: np.ndarray | None = None  # images: [n, C, H, W], uint8 (0..255) or float32 (0..1)
    source_rows: np.ndarray | None = None  # images cut to dataset.limit: each kept image's row in its source

    @property
    def rows(self) -> np.ndarray:
        """The row number of each example in its source (a table's index), for the run's files."""
        if self.features is not None:
            return self.features.index.to_numpy()
        return self.source_rows if self.source_rows is not None else np.arange(len(self.y))


def load_dataset(cfg: DatasetConfig) -> Dataset:
    """Read the dataset named by `cfg` and check it; every user-fixable problem is a RunnerError."""
    from runner.data import images  # imported here: images.py builds on Dataset, defined above

    if cfg.name in images.NAMES:
        return images.load_images(cfg)
    _need(cfg.size is None and cfg.limit is None, f"dataset.size and dataset.limit apply to image datasets "
          f"({', '.join(images.NAMES)}), not to the table {cfg.name} (set them to null)")
    if cfg.name in GENERATED and cfg.path is None:
        table, file, target = GENERATED[cfg.name](), cfg.name, cfg.target
    else:
        path = _resolve(cfg)
        table = _read(path)
        file, target = path.name, cfg.target
    columns = list(table.columns)
    _need(target is not None, f"dataset.target is not set; name the column of {file} to predict "
          f"(dataset.target=...; columns are: {', '.join(map(str, columns))})")
    listed = {key: list(getattr(cfg, key) or []) for key in ("categorical", "numeric", "drop")}

    _need(target in columns, f"dataset.target={target!r} is not a column of {file}; "
          f"columns are: {', '.join(map(str, columns))} (set dataset.target=...)")
    for key, names in listed.items():
        unknown = [c for c in names if c not in columns]
        _need(not unknown, f"dataset.{key} lists {', '.join(map(repr, unknown))}, not columns of {file}; "
              f"columns are: {', '.join(map(str, columns))} (fix dataset.{key})")
        _need(target not in names, f"dataset.target={target!r} is also listed in dataset.{key}; "
              f"the target cannot be a feature (remove it from dataset.{key})")
    both = sorted(set(listed["categorical"]) & set(listed["numeric"]))
    _need(not both, f"{', '.join(map(repr, both))} listed in both dataset.numeric and dataset.categorical "
          "(list each column in one of them)")
    _need(len(table) >= MIN_ROWS, f"{file} has {len(table)} data rows; runner needs at least {MIN_ROWS}")
    missing = int(table[target].isna().sum())
    _need(missing == 0, f"{missing} rows of {file} have no value in the target column {target!r} "
          "(remove those rows from the file or choose another dataset.target)")

    weights = _weights(table, cfg.weight, target, file)
    feature_names = [c for c in columns if c not in (target, cfg.weight) and c not in listed["drop"]]
    _need(bool(feature_names), f"{file} has no feature columns besides the target {target!r} (check dataset.drop)")
    features = table[feature_names]
    empty = [c for c in feature_names if features[c].isna().all()]
    _need(not empty, f"{', '.join(map(repr, empty))} in {file} has no values (add it to dataset.drop)")
    numeric = [c for c in feature_names if c in listed["numeric"]
               or (c not in listed["categorical"] and _is_number(features[c]))]
    categorical = [c for c in feature_names if c not in numeric]
    for c in numeric:
        if not _is_number(features[c]):
            raise RunnerError(f"dataset.numeric lists {c!r} but it holds non-numbers in {file} (e.g. "
                              f"{_non_number(features[c])!r}); list it in dataset.categorical instead")

    clean = pd.DataFrame({c: features[c].astype("float64") if c in numeric else _as_category(features[c])
                          for c in feature_names})
    task, y, classes = _encode_target(table[target], cfg, file)
    return Dataset(name=cfg.name, target=target, task=task, features=clean, y=y, classes=classes,
                   numeric=numeric, categorical=categorical,
                   categories={c: _domain(features[c]) for c in categorical}, weights=weights)


def _weights(table: pd.DataFrame, column: str | None, target: str, file: str) -> np.ndarray | None:
    """The sample-weight column as floats, checked: present, numeric, complete, non-negative."""
    if column is None:
        return None
    _need(column in table.columns and column != target, f"dataset.weight={column!r} is not a feature column of "
          f"{file}; columns are: {', '.join(map(str, table.columns))} (set dataset.weight=... or null)")
    values = pd.to_numeric(table[column], errors="coerce")
    _need(bool(values.notna().all() and (values >= 0).all() and values.sum() > 0),
          f"dataset.weight={column!r} must hold non-negative numbers in every row of {file}")
    return values.to_numpy(dtype="float64")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise RunnerError(message)


def _resolve(cfg: DatasetConfig) -> Path:
    if cfg.path is not None:
        return Path(cfg.path).expanduser()
    path = bundled_data(f"{cfg.name}.csv")
    bundled = ", ".join(sorted(p.stem for p in path.parent.glob("*.csv")))
    _need(path.is_file(), f"dataset.name={cfg.name!r} has no bundled file (bundled: {bundled}); "
          "set dataset.path=... to a CSV file")
    return path


def _read(path: Path) -> pd.DataFrame:
    _need(path.is_file(), f"dataset file {path} does not exist (set dataset.path=... to a CSV file)")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise RunnerError(f"dataset file {path} is empty (it needs a header row and data rows)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        reason = " ".join(str(err).split())  # parser messages can span lines; ours must not
        raise RunnerError(f"cannot read dataset file {path} as CSV: {reason}") from None
    return table.reset_index(drop=True)


def _is_number(col: pd.Series) -> bool:
    # Booleans are numbers to pandas but yes/no facts to us: they get one-hot, not scaled.
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _non_number(col: pd.Series):
    """The first value that does not read as a number (a stray '?' in a numeric column, say)."""
    present = col.dropna()
    bad = present[pd.to_numeric(present, errors="coerce").isna()]
    return (bad if len(bad) else present).iloc[0]


def _domain(col: pd.Series) -> list[str]:
    # Sort before casting to str so numbers keep numeric order (2 before 10).
    return [str(v) for v in sorted(_integers(col.dropna()).unique().tolist())]


def _encode_target(values: pd.Series, cfg: DatasetConfig, file: str) -> tuple[str, np.ndarray, list[str]]:
    """The task, the encoded target and the class labels, from the column and the config."""
    task, name = Task(cfg.task).value, repr(cfg.target)
    example = values.iloc[0]
    if cfg.positive_above is not None:
        _need(task in ("auto", "binary"), f"dataset.positive_above={cfg.positive_above} makes a binary target "
              f"but dataset.task={task} (set dataset.task=binary, or dataset.positive_above=null)")
        _need(_is_number(values), f"dataset.positive_above={cfg.positive_above} needs a numeric target; "
              f"{name} holds {example!r} (set dataset.positive_above=null)")
        values = (values > cfg.positive_above).astype("int64")
        task = "binary"
    elif task == "regression":
        _need(_is_number(values), f"dataset.task=regression needs a numeric target; {name} holds {example!r} "
              "(set dataset.task=binary or multiclass)")
        return task, values.to_numpy(dtype="float64"), []
    elif task == "auto":
        labels = values.nunique()
        classify = not _is_number(values) or (bool(np.all(np.mod(values, 1) == 0)) and labels <= MAX_CLASSES)
        if not classify:
            return "regression", values.to_numpy(dtype="float64"), []
        task = "binary" if labels == 2 else "multiclass"

    # Class codes in sorted label order, as sklearn's LabelEncoder gives them.
    labels, codes = np.unique(_integers(values).to_numpy(), return_inverse=True)
    classes = [str(c) for c in labels]
    _need(len(classes) >= 2, f"the target {name} has one class ({classes[0]!r}) in {file}; classification "
          "needs at least 2 (choose another dataset.target, or set dataset.positive_above)")
    _need(task != "binary" or len(classes) == 2, f"dataset.task=binary but the target {name} has {len(classes)} "
          "classes (set dataset.task=multiclass, or dataset.positive_above=... to threshold it)")
    return task, codes.astype("int64"), classes
