"""Load the dataset a config names into a Dataset: image sets (data/images.py), the user's loader
(data/python_source.py), generated tables, and CSV tables, read and screened here: the feature columns with their
roles and the encoded target; every user-fixable problem one RunnerError."""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from runner import user_code
from runner.config.schema import DatasetConfig, Task
from runner.data import images
from runner.data.categories import as_category as _as_category
from runner.data.categories import integers as _integers
from runner.data.dataset import MIN_ROWS, Dataset
from runner.data.generated import GENERATED
from runner.data.python_source import load_python
from runner.errors import RunnerError
from runner.paths import bundled_data

MAX_CLASSES = 20  # an integer target with at most this many distinct values is read as class labels
# float32 training squares and sums these values: beyond this magnitude they overflow to inf.
MAX_MAGNITUDE = 1e18
# Columns nobody declared (dataset.numeric, categorical or keep) are screened before training:
# - numbers with a few text cells ('12a', 'n/a?'): at least MOSTLY_NUMBERS of the non-missing cells read as
#   numbers, taking at least MIN_NUMBERS distinct values. Read as text, every distinct number would become a
#   one-hot feature, so the file is refused, naming the cells.
# - a text column with at least MIN_ID_VALUES distinct values, more than half of its non-missing cells (an ID,
#   a name, free text): most of its values occur once, so one-hot encoding learns nothing that carries to new
#   rows. It is dropped, and so is a column with one value (after imputation it is constant).
MOSTLY_NUMBERS = 0.9
MIN_NUMBERS = 5
MIN_ID_VALUES = 10
SHOWN_CELLS = 5  # offending cells a message names


_last: list = []  # [(key, Dataset)]: the config checks and the run read the file once between them


def load_dataset(cfg: DatasetConfig) -> Dataset:
    """Read the dataset named by `cfg` and check it; every user-fixable problem is a RunnerError."""

    if cfg.name in images.NAMES:
        return _cached((repr(cfg),), lambda: images.load_images(cfg))
    if cfg.name == "python":  # called once per command: what was checked is what trains
        return _cached(("python", repr(cfg), user_code.COMMAND[0]), lambda: load_python(cfg, _load))
    _need(cfg.size is None and cfg.limit is None, f"dataset.size and dataset.limit apply to image datasets "
          f"({', '.join(images.NAMES)}), not to the table {cfg.name} (set them to null)")
    if cfg.name in GENERATED and cfg.path is None:
        return _cached((repr(cfg),), lambda: _load(cfg, GENERATED[cfg.name](), cfg.name))
    path = _resolve(cfg)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, repr(cfg))
    except OSError:
        key = None  # _read names the problem
    return _cached(key, lambda: _load(cfg, _read(path, list(cfg.na_values or [])), path.name))


def _cached(key, load) -> Dataset:
    """The last dataset loaded, if it was loaded under `key` (None: never cached), else `load()`."""
    if key is not None and _last and _last[0][0] == key:
        return _last[0][1]
    dataset = load()
    _last[:] = [(key, dataset)]
    return dataset


def _load(cfg: DatasetConfig, table: pd.DataFrame, file: str, lines: bool = True) -> Dataset:
    """`table` (read from `file`, or with `lines=False` rows a function returned, `file` saying whose) as a
    Dataset by the CSV rules; a bad cell is named by its line in the file, or by its row in what was returned."""
    target = cfg.target
    columns = list(table.columns)
    _need(target is not None, f"dataset.target is not set; name the column of {file} to predict "
          f"(dataset.target=...; columns are: {', '.join(map(str, columns))})")
    listed = {key: list(getattr(cfg, key) or []) for key in ("categorical", "numeric", "drop", "keep")}

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
    both = sorted(set(listed["keep"]) & set(listed["drop"]))
    _need(not both, f"{', '.join(map(repr, both))} listed in both dataset.keep and dataset.drop "
          "(remove it from one of them)")
    _need(len(table) >= MIN_ROWS, f"{file} has {len(table)} data rows; runner needs at least {MIN_ROWS}")
    missing = int(table[target].isna().sum())
    _need(missing == 0, f"{missing} rows of {file} have no value in the target column {target!r} "
          "(remove those rows from the file or choose another dataset.target)")
    # Inferred, a target of numbers with a few text cells would be read as hundreds of text classes.
    if Task(cfg.task) == Task.auto and cfg.positive_above is None and _mostly_numbers(table[target]):
        raise RunnerError(f"the target {target!r} of {file} holds numbers but for {_stray_cells(table[target], lines)[0]}"
                          "; fix or remove those rows, or set dataset.task=multiclass to read its values as labels")

    weights = _weights(table, cfg.weight, target, file)
    feature_names = [c for c in columns if c not in (target, cfg.weight) and c not in listed["drop"]]
    _need(bool(feature_names), f"{file} has no feature columns besides the target {target!r} (check dataset.drop)")
    features = table[feature_names]
    empty = [c for c in feature_names if features[c].isna().all()]
    _need(not empty, f"{', '.join(map(repr, empty))} in {file} has no values (add it to dataset.drop)")
    dropped = _screen(features, listed, file, lines)
    feature_names = [c for c in feature_names if c not in dropped]
    _need(bool(feature_names), f"no feature column of {file} besides the target {target!r} carries anything to "
          f"learn from: {', '.join(f'{c} ({why})' for c, why in dropped.items())} (train on them anyway with "
          f"dataset.keep=[{','.join(map(str, dropped))}])")
    features = features[feature_names]
    numeric = [c for c in feature_names if c in listed["numeric"]
               or (c not in listed["categorical"] and _is_number(features[c]))]
    categorical = [c for c in feature_names if c not in numeric]

    for c in numeric + ([target] if _is_number(table[target]) else []) + ([cfg.weight] if cfg.weight else []):
        _check_finite(table[c], c, file, "fix or remove those rows" if c == target else
                      "fix them, or leave the cells empty (missing features are imputed)", lines)
    clean = pd.DataFrame({c: features[c].astype("float64") if c in numeric else _as_category(features[c])
                          for c in feature_names})
    task, y, classes = _encode_target(table[target], cfg, file)
    # A file of the user's is named after the file (not after the `csv` config it came through).
    name = Path(file).stem if cfg.path is not None else cfg.name
    return Dataset(name=name, target=target, task=task, features=clean, y=y, classes=classes,
                   numeric=numeric, categorical=categorical,
                   categories={c: _domain(features[c]) for c in categorical}, weights=weights,
                   positive=classes[1] if task == "binary" else None, dropped=dropped)


def _screen(features: pd.DataFrame, listed: dict[str, list[str]], file: str, lines: bool = True) -> dict[str, str]:
    """Refuse columns of numbers with stray text; the columns that carry nothing to learn from (column -> why).
    The user's declarations win: a column listed in dataset.numeric, categorical or keep is never dropped."""
    typed = set(listed["numeric"]) | set(listed["categorical"])
    for c in features.columns:
        if c in listed["numeric"] and not _is_number(features[c]):
            cells, markers = _stray_cells(features[c], lines)
            as_missing = f', read them as missing with "{markers}"' if markers else ""
            raise RunnerError(f"dataset.numeric lists {c!r} but it holds non-numbers in {file}: {cells}; clean "
                              f"those cells{' in the file' * lines}{as_missing}, or move it to dataset.categorical")
        if c not in typed and _mostly_numbers(features[c]):
            cells, markers = _stray_cells(features[c], lines)
            raise RunnerError(f"column {c!r} of {file} holds numbers but for {cells}; clean those cells"
                              f"{' in the file' * lines}, read them as missing with \"{markers}\", or read it as "
                              f"text with dataset.categorical=[{c}]")
    exempt = typed | set(listed["keep"])
    return {c: why for c in features.columns if c not in exempt and (why := _uninformative(features[c]))}


def _check_finite(col: pd.Series, name: str, file: str, fix: str, lines: bool = True) -> None:
    """Refuse ±inf and magnitudes that overflow float32 training, naming the column and the first line (or row)."""
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")
    bad = np.flatnonzero(np.abs(np.nan_to_num(values, nan=0.0)) > MAX_MAGNITUDE)
    if len(bad):
        first = values[bad[0]]
        raise RunnerError(f"column {name!r} of {file} holds {first:g} {_position(bad[0], lines)} ({len(bad)} such "
                          f"row{'s' * (len(bad) > 1)}); runner trains on finite values of magnitude <= "
                          f"{MAX_MAGNITUDE:g}: {fix}")


def _mostly_numbers(col: pd.Series) -> bool:
    """A text column whose cells are numbers but for a few (typos, ad-hoc missing marks): see MOSTLY_NUMBERS."""
    if _is_number(col) or pd.api.types.is_bool_dtype(col):
        return False
    numbers = pd.to_numeric(col.dropna(), errors="coerce")
    return bool(numbers.notna().mean() >= MOSTLY_NUMBERS and numbers.nunique() >= MIN_NUMBERS)


def _position(i: int, lines: bool) -> str:
    """Where the `i`-th data row is: its line in a CSV file (after the header), or its row in what a loader
    returned (from 0, as the run's files number rows)."""
    return f"on line {i + 2}" if lines else f"in row {i}"


def _stray_cells(col: pd.Series, lines: bool = True) -> tuple[str, str | None]:
    """The non-number cells of a column with their lines ("3 of 300 cells: '12a' (line 7), ..."), and the
    dataset.na_values override that reads them as missing (None for a column of words, not of numbers)."""
    present = col.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    bad = present[numbers.isna()]
    cells = ", ".join(f"{v!r} ({_position(i, lines).split(' ', 1)[1]})" for i, v in bad.head(SHOWN_CELLS).items())
    more = f" and {len(bad) - SHOWN_CELLS} more" if len(bad) > SHOWN_CELLS else ""
    texts = list(dict.fromkeys(map(str, bad)))
    markers = _override_list(texts) if len(texts) <= 2 * SHOWN_CELLS else f"[...] (its {len(texts)} texts)"
    return f"{len(bad)} of {len(present)} cells: {cells}{more}", (
        f"dataset.na_values={markers}" if numbers.notna().any() else None)


def _override_list(values: list[str]) -> str:
    """`values` as a Hydra override list of quoted strings: ['12a','n/a?']."""

    def quote(value: str) -> str:
        # Hydra reads a backslash literally unless backslashes precede a quote or end the string: double those.
        return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value) + "'"

    return "[" + ",".join(map(quote, values)) + "]"


def _uninformative(col: pd.Series) -> str | None:
    """Why a column carries nothing to learn from (one value; text whose values hardly repeat), else None."""
    present = col.dropna()
    distinct = present.nunique()
    if distinct == 1:
        # Blanks are imputed with the one value: the column is constant either way.
        return "one value" if len(present) == len(col) else "one value and blanks"
    if not _is_number(col) and distinct >= MIN_ID_VALUES and distinct > len(present) / 2:
        if distinct == len(col):
            return "text, unique per row"
        return f"text, {distinct:,} values in {len(present):,} rows"
    return None


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


def special_file(path: Path) -> str | None:
    """What `path` is when it exists but is neither a regular file nor a folder ("a character device such as
    /dev/zero", "a FIFO", ...), so a data file's line says that rather than that it does not exist; else None."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def _read(path: Path, na_values: list[str]) -> pd.DataFrame:
    """The CSV file as a table (`na_values` read as missing, besides pandas' own marks); one line per problem."""
    _need(not path.is_dir(), f"dataset.path={path} is a folder; give a CSV file (dataset=images reads folders)")
    kind = special_file(path)
    _need(kind is None, f"dataset.path={path} is {kind}, not a regular file; give a CSV file")
    _need(path.is_file(), f"dataset file {path} does not exist (set dataset.path=... to a CSV file)")
    try:
        table = pd.read_csv(path, na_values=na_values or None)
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, na_filter=False).iloc[0].tolist()
    except pd.errors.EmptyDataError:
        raise RunnerError(f"dataset file {path} is empty (it needs a header row and data rows)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        reason = " ".join(str(err).split())  # parser messages can span lines; ours must not
        raise RunnerError(f"cannot read dataset file {path} as CSV: {reason}") from None
    # pandas renames a repeated name (a, a.1) without a word: which of them is meant is the user's call.
    twice = [name for i, name in enumerate(header) if name and name in header[:i]]
    if twice:
        where = [i + 1 for i, name in enumerate(header) if name == twice[0]]
        raise RunnerError(f"column name {twice[0]!r} appears {len(where)} times in the header of {path.name} "
                          f"(columns {', '.join(map(str, where))}); rename all but one of them in the file")
    return table.reset_index(drop=True)


def _is_number(col: pd.Series) -> bool:
    # Booleans are numbers to pandas but yes/no facts to us: they get one-hot, not scaled.
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


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
    if cfg.positive is not None:
        _need(task == "binary", f"dataset.positive={cfg.positive!r} names the positive class of a binary target; "
              f"{name} has {len(classes)} classes (set dataset.positive=null)")
        _need(cfg.positive in classes, f"dataset.positive={cfg.positive!r} is not a class of {name}; its classes "
              f"are: {', '.join(classes)}")
        if cfg.positive == classes[0]:  # the positive class is code 1: p_<positive> is its probability
            classes, codes = classes[::-1], 1 - codes
    return task, codes.astype("int64"), classes
