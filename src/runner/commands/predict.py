"""`runner predict RUN_DIR --data FILE.csv`: every member's predictions for new rows, and the population's mean.

Everything comes from the run's checkpoint (weights, model spec, each member's fitted preprocessing, columns,
classes, diverged members); the training data is not read again. New rows go through training's own rules:
its finiteness check, its imputation (or a refusal where it learned none), its one-hot encoding. Imports no
sklearn or matplotlib.
"""

import argparse
import errno
import sys
from pathlib import Path

import numpy as np

from runner.errors import RunnerError
from runner.rundir.layout import is_fit_state

USAGE = ("runner predict RUN_DIR --data FILE.csv [--out FILE] [--checkpoint best|last|refit|avg_<name>] "
         "[--model package.module:Class]")
CHUNK_ROWS = 4096  # rows per forward pass
NEEDED = ("flat", "stats", "model", "model_config", "input_shape", "classes", "loss", "preprocessing", "members")
TABLE_NEEDED = ("target", "numeric", "categorical", "categories")
SHOWN_ROWS = 5  # rows named in a message before "and N more"


def predict_command(args: list[str]) -> int:
    """Run `runner predict`; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(prog="runner predict", usage=USAGE, description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished `runner train` run directory")
    parser.add_argument("--data", required=True, help="a CSV file with the training file's feature columns")
    parser.add_argument("--out", help="where to write the predictions CSV (default: print it)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, refit or avg_<name>")
    parser.add_argument("--model", help="a run of model=module: your class (package.module:Class), as trained")
    try:
        opts = parser.parse_args(args)
    except SystemExit as exit_:
        return int(exit_.code or 0) and 2
    try:
        out = _check_out(Path(opts.out)) if opts.out else None  # before the work, not after it
        table = predict(Path(opts.run_dir), Path(opts.data), opts.checkpoint, opts.model)
        if out is not None:
            write_csv(table, out)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    left_out = table.attrs.get("diverged", [])
    if left_out:
        print(f"note: member{'s' * (len(left_out) > 1)} {', '.join(map(str, left_out))} diverged in training: "
              "no columns here and left out of the mean (as from every table of the run)", file=sys.stderr)
    for column, values in table.attrs.get("unseen", {}).items():
        print(f"note: {unseen_note(column, values, opts.data)}", file=sys.stderr)
    if out is None:
        from runner.rundir.spreadsheet import safe_frame

        safe_frame(table).to_csv(sys.stdout, index=False)
    else:
        members = sum(c.endswith(".pred") and c != "mean.pred" for c in table.columns)
        print(f"{len(table)} rows predicted by {members} member{'s' * (members != 1)} and their mean: {out}")
    return 0


def _check_own_model(state: dict, given: str | None, run_dir: Path, python: bool = False) -> None:
    """A model=module checkpoint is rebuilt from the class the user names, and only if it is the one it records;
    the line names the shell's --model, or from Python (`python`) runner.load's model=."""
    if state["model"] != "module":
        return
    recorded = state["model_config"].get("target")
    if given is None:
        how = f"runner.load({str(run_dir)!r}, model={recorded.rpartition(':')[2]})" if python else f"--model {recorded}"
        raise RunnerError(f"{run_dir} trained your own model class {recorded}; runner imports no code a run folder "
                          f"names, so name it yourself: {how}")
    if given != recorded:
        raise RunnerError(f"{'model=' if python else '--model '}{given}: {run_dir} was trained with {recorded}; "
                          "give that class")


def load_checkpoint(run_dir: Path, name: str) -> dict:
    """The checkpoint `name` of a run, checked to hold what prediction needs; one-line errors otherwise."""
    import torch

    if not run_dir.is_dir():
        raise RunnerError(f"run directory {run_dir} does not exist (give the directory `runner train` printed)")
    path = run_dir / "checkpoints" / f"{name}.pt"
    if not path.is_file():
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt") if not is_fit_state(p))
        raise RunnerError(f"{path} does not exist; checkpoints of this run: {', '.join(found) or 'none'} "
                          "(choose one with --checkpoint)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")  # saved on any device, read anywhere
    except Exception as exc:  # truncated, foreign or from an incompatible version
        raise RunnerError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is truncated or not a "
                          "runner checkpoint: train the run again") from None
    _need(isinstance(state, dict), path, "top level (not a dict)")
    missing = [k for k in NEEDED if k not in state]
    if missing:
        raise RunnerError(f"checkpoint {path} lacks {', '.join(missing)}: it comes from another runner version; "
                          "train the run again with this version")
    _check_types(state, path)
    return state


def predict(run_dir: Path, data: Path, checkpoint: str = "best", model_class: str | None = None,
            python: bool = False):
    """A DataFrame: `row`, then each kept member's predictions (`m<i>.pred`, `m<i>.p_<class>`) and their mean
    (`mean.pred`, `mean.p_<class>`), and for a run of ensemble=greedy its ensemble (`ensemble.pred`,
    `ensemble.p_<class>`: the mean over splits of each split's weighted members, as ensemble.json records them);
    `attrs["diverged"]` lists the members left out. A run of the user's own
    model (model=module) is rebuilt only from the class the caller names, `model_class`, never from the path the
    checkpoint records alone: runner imports no code that a run folder names. `python`: called from Python
    (Result.predict), so a line names runner.load's model= rather than the shell's --model."""
    import pandas as pd
    import torch

    from runner.config.schema import ModelConfig
    from runner.data.preprocess import standardize
    from runner.engine.losses import probabilities
    from runner.models import build_model

    state = load_checkpoint(run_dir, checkpoint)
    _check_own_model(state, model_class, run_dir, python)
    pre = {k: v.numpy() for k, v in state["preprocessing"].items()}
    X, unseen = _table(data, state, imputes="fill" in pre)
    E, classes = len(state["members"]), list(state["classes"])
    try:
        # The loss too: a mixture of experts mixes its experts in the task's output space.
        model = build_model(ModelConfig(**state["model_config"]), E, list(state["input_shape"]), _outputs(state),
                            state["loss"])
        model.load_weights(state["flat"], state["stats"])
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise RunnerError(f"checkpoint {run_dir / 'checkpoints' / f'{checkpoint}.pt'}: its weights do not fit its "
                          f"model spec ({type(exc).__name__}); it is damaged: train the run again") from None
    model.eval()
    parts = []
    for start in range(0, len(X), CHUNK_ROWS):
        # Broadcasting over the members makes a fresh [E, n, d] array (a writable one for torch).
        x = standardize(X[None, start : start + CHUNK_ROWS], pre["fill"][:, None] if "fill" in pre else None,
                        pre["shift"][:, None], pre["scale"][:, None])
        with torch.no_grad():
            parts.append(probabilities(state["loss"], model(torch.from_numpy(x))))
    out = torch.cat(parts, 1).numpy() if parts else np.zeros((E, 0, max(len(classes), 1)), np.float32)  # [E, n, K]
    if not classes:
        out = out * pre["y_scale"][:, None, None] + pre["y_mean"][:, None, None]
    ids = [m["member"] for m in state["members"]]
    diverged = set(state.get("diverged", []))
    kept = [e for e, i in enumerate(ids) if i not in diverged]
    _check_finite_output(out, kept, ids, data)

    # Every name is `<owner>.<field>`: the owner (`m<i>`, `mean` or `ensemble`) holds no ".", so a name splits at
    # its first "." into one owner and one field whatever the class names hold; owners differ (member ids are
    # distinct integers, `mean` and `ensemble` are not `m<integer>`), and within an owner `pred` is not
    # `p_<class>` and the classes are distinct. So no two columns share a name, and `row` has no "." at all.
    owners = [(f"m{ids[e]}", out[e]) for e in kept] + [("mean", out[kept].mean(0))]
    weights = ensemble_weights(run_dir, ids, diverged)
    if weights is not None:  # the run's greedy ensemble: each split's weighted members, the splits averaged
        owners.append(("ensemble", np.tensordot(weights, out, axes=1)))
    frame = {"row": np.arange(len(X))}
    labels = np.asarray(classes, dtype=object)
    for owner, values in owners:
        if classes:
            frame[f"{owner}.pred"] = labels[values.argmax(1)]
            frame.update({f"{owner}.p_{c}": values[:, j] for j, c in enumerate(classes)})
        else:
            frame[f"{owner}.pred"] = values[:, 0]
    table = pd.DataFrame(frame)
    table.attrs["diverged"] = [i for i in ids if i in diverged]
    table.attrs["unseen"] = unseen
    return table


def ensemble_weights(run_dir: Path, ids: list[int], diverged: set) -> np.ndarray | None:
    """[E] each member's weight in the run's greedy ensemble (ensemble.json: per split, members and weights summing
    to 1; the splits averaged), or None for a run without one; a malformed file is one line."""
    import json

    path = run_dir / "ensemble.json"
    if not path.is_file():
        return None
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))["folds"]
        weights = np.zeros(len(ids))
        position = {i: e for e, i in enumerate(ids)}
        for fold in folds:
            members, w = fold["members"], np.asarray(fold["weights"], dtype=float)
            ok = (_list_of(members, int) and len(members) == len(w) == len(set(members)) > 0
                  and all(m in position and m not in diverged for m in members)
                  and np.isfinite(w).all() and (w > 0).all() and abs(w.sum() - 1) < 1e-6)
            if not ok:
                raise ValueError
            weights[[position[m] for m in members]] += w / len(folds)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError):
        raise RunnerError(f"{path} is malformed (each split needs members of this run and weights summing to 1): "
                          "it is damaged; train the run again") from None
    if not folds:
        raise RunnerError(f"{path} lists no splits: it is damaged; train the run again")
    return weights


def write_csv(table, out: Path) -> None:
    """Write `table` to `out` atomically (rundir.folder.write_atomic: a link planted anywhere is never followed,
    and a failure leaves `out` as it was); an OSError is one line naming --out."""
    from runner.rundir.spreadsheet import write_csv as write_safe

    try:
        write_safe(out, table, durable=True)  # cells a spreadsheet would run as formulas written as text
    except OSError as err:
        fix = "make the folder writable" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "free space"
        raise RunnerError(f"cannot write --out {out}: {err.strerror or err}; nothing was written ({fix} or choose "
                          "another --out)") from None


def _check_out(out: Path) -> Path:
    """`--out`, checked to name a file in an existing folder before anything is computed."""
    if out.is_dir():
        raise RunnerError(f"--out {out} is a folder; give a file path for the predictions CSV (e.g. {out}/preds.csv)")
    if not out.parent.is_dir():
        raise RunnerError(f"--out {out}: folder {out.parent} does not exist (create it, or choose another --out)")
    return out


def _outputs(state: dict) -> int:
    """The model's output width: one logit for BCE or regression, one per class for CE."""
    return len(state["classes"]) if state["loss"] == "ce" else 1


def _check_finite_output(out: np.ndarray, kept: list[int], ids: list[int], data: Path) -> None:
    """Refuse a non-finite prediction of a kept member: no NaN or inf may reach the output."""
    bad = ~np.isfinite(out[kept]).all(-1)  # [kept, n]
    if bad.any():
        k = int(np.argwhere(bad)[0][0])
        rows = np.flatnonzero(bad.any(0))
        if bad[k].all():
            raise RunnerError(f"member {ids[kept[k]]} predicts a non-finite value for every row of {data}: its "
                              "weights are not finite, the checkpoint is damaged (train the run again)")
        raise RunnerError(f"member {ids[kept[k]]} predicts a non-finite value for {_rows(rows)} of {data}; those "
                          "rows lie far outside what the run trained on: check their values")


def _table(data: Path, state: dict, imputes: bool) -> tuple[np.ndarray, dict[str, list]]:
    """[n, d] float32 inputs of the file, built as training built them (NaN where missing, only if `imputes`),
    and each categorical column's values the run never saw."""
    import pandas as pd

    from runner.data.categories import as_category
    from runner.data.preprocess import table_matrix
    from runner.data.loading import _check_finite, special_file

    if data.is_dir():
        raise RunnerError(f"--data {data} is a folder; give a CSV file with --data")
    if kind := special_file(data):
        raise RunnerError(f"--data {data} is {kind}, not a regular file; give a CSV file with --data")
    if not data.is_file():
        raise RunnerError(f"data file {data} does not exist (give a CSV file with --data)")
    try:
        table = pd.read_csv(data, na_values=state.get("na_values") or None)  # training's missing marks
    except pd.errors.EmptyDataError:
        raise RunnerError(f"data file {data} is empty (it needs a header row with the feature columns)") from None
    except OSError as err:
        raise RunnerError(f"cannot read data file {data}: {err.strerror or err} (make it readable, e.g. "
                          f"chmod u+r {data})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise RunnerError(f"cannot read {data} as CSV: {' '.join(str(err).split())}") from None
    numeric, categorical = list(state["numeric"]), list(state["categorical"])
    missing = [c for c in numeric + categorical if c not in table.columns]
    if missing:
        raise RunnerError(f"{data} lacks the feature column{'s' * (len(missing) > 1)} {', '.join(missing)} that "
                          f"the run trained on (the target {state['target']!r} is not needed)")
    fix = "fix them, or leave the cells empty (the run imputes missing cells)" if imputes else "fix them"
    frame, holes = pd.DataFrame(index=table.index), {}
    for c in numeric:
        values = pd.to_numeric(table[c], errors="coerce")
        bad = table[c].notna() & values.isna()
        if bad.any():
            raise RunnerError(f"column {c!r} of {data} holds a non-number ({table[c][bad].iloc[0]!r}) where the "
                              "run trained on numbers")
        _check_finite(table[c], c, str(data), fix)  # training's own rule
        holes[c] = np.flatnonzero(values.isna().to_numpy())
        frame[c] = values.astype(np.float64)
    for c in categorical:
        frame[c] = as_category(table[c])
        holes[c] = np.flatnonzero(table[c].isna().to_numpy())
    holed = [c for c, rows in holes.items() if len(rows)]
    if holed and not imputes:
        c, rows = holed[0], holes[holed[0]]
        also = f"; {', '.join(map(repr, holed[1:]))} too" if len(holed) > 1 else ""
        raise RunnerError(f"column {c!r} of {data} has {'a missing cell' if len(rows) == 1 else 'missing cells'} "
                          f"in {_rows(rows)}, but the run's training data had none to learn an imputation from: "
                          f"fill {'it' if len(rows) == 1 else 'them'}{also}")
    return table_matrix(frame, numeric, categorical, state["categories"], bool(state.get("codes", False)))


def unseen_note(column: str, values: list, data) -> str:
    """One line on a categorical column's values that training never saw, and how the model takes them."""
    shown = ", ".join(map(repr, values[:3])) + (f" and {len(values) - 3} more" if len(values) > 3 else "")
    return (f"column {column!r} of {data} holds {'a value' if len(values) == 1 else 'values'} the run never saw in "
            f"training ({shown}): predicted as an unknown category (one-hot: all its columns 0; codes: the "
            "unknown code)")


def _rows(rows: np.ndarray) -> str:
    """'row 3 (line 5)' or 'rows 3, 8 (lines 5, 10)': data rows from 0 as the output's `row`, file lines from 1."""
    shown = [int(r) for r in rows[:SHOWN_ROWS]]
    more = f" and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
    s = "s" * (len(rows) > 1)
    return (f"row{s} {', '.join(map(str, shown))}{more} (line{s} {', '.join(str(r + 2) for r in shown)}"
            f"{', ...' if more else ''})")


def _check_types(state: dict, path: Path) -> None:
    """A checkpoint is data: every field prediction reads has the type and shape it needs, or one line."""
    import torch

    from runner.engine.losses import COMPATIBLE

    members, classes = state["members"], state["classes"]
    _need(_list_of(members, dict) and members and all(_is_int(m.get("member")) for m in members)
          and len({m["member"] for m in members}) == len(members), path, "members list")
    ids = {m["member"] for m in members}
    _need(_list_of(classes, str) and len(set(classes)) == len(classes), path, "classes list (distinct strings)")
    _need(_list_of(state["input_shape"], int) and state["input_shape"] and all(
        _is_int(v) and v > 0 for v in state["input_shape"]), path, "input_shape (positive integers)")
    loss = state["loss"]
    _need(loss in COMPATIBLE and (loss == "mse") == (not classes) and (loss != "bce" or len(classes) == 2),
          path, "loss for its classes")
    _need(isinstance(state["model_config"], dict) and all(isinstance(k, str) for k in state["model_config"]),
          path, "model_config")
    diverged = state.get("diverged", [])
    _need(_list_of(diverged, int) and all(_is_int(i) and i in ids for i in diverged) and len(set(diverged)) < len(ids),
          path, "diverged list (ids of some, not all, members)")
    E = len(members)
    _need(all(isinstance(state[k], torch.Tensor) and state[k].dim() == 2 and len(state[k]) == E
              for k in ("flat", "stats")), path, "weights (one row per member)")
    if "numeric" not in state:
        raise RunnerError(f"the run of {path} learned from images; runner predict reads tables (CSV) only")
    missing = [k for k in TABLE_NEEDED if k not in state]
    _need(not missing, path, f"table description (no {', '.join(missing)})")
    numeric, categorical, categories = state["numeric"], state["categorical"], state["categories"]
    _need(isinstance(state["target"], str) and _list_of(numeric, str) and _list_of(categorical, str)
          and isinstance(categories, dict) and all(_list_of(categories.get(c), str) for c in categorical)
          and _list_of(state.get("na_values", []), str) and isinstance(state.get("codes", False), bool), path,
          "table columns (names, categories and missing marks as strings)")
    d = len(numeric) + (len(categorical) if state.get("codes") else sum(len(categories[c]) for c in categorical))
    _need(list(state["input_shape"]) == [d], path, f"input_shape for its {d} feature columns")
    pre = state["preprocessing"]
    shapes = {"shift": (E, d), "scale": (E, d), "fill": (E, d), "y_mean": (E,), "y_scale": (E,)}
    _need(isinstance(pre, dict) and all(k in pre for k in shapes if k != "fill") and all(
        isinstance(pre[k], torch.Tensor) and pre[k].is_floating_point() and tuple(pre[k].shape) == shape
        and bool(torch.isfinite(pre[k]).all()) for k, shape in shapes.items() if k in pre)
          and bool((pre["scale"] > 0).all()) and bool((pre["y_scale"] > 0).all()), path,
          f"preprocessing (finite float arrays of {E} members x {d} features)")


def _list_of(value, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(ok, path: Path, what: str) -> None:
    if not ok:
        raise RunnerError(f"checkpoint {path} has a malformed {what}: it is damaged or not a runner checkpoint "
                          "(train the run again)")
