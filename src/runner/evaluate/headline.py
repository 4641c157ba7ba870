"""The `over`, `metrics` and `baselines` parts of results.json: each test metric's headline interval and the others.

The headline interval is over units that do not share test rows, because only those are independent samples
of the test error: for k-fold the folds (seeds averaged within each fold), with the Nadeau–Bengio correction
when repeated and for the skewed losses, its SE never under the test rows' SE; for one split (holdout,
leave-one-out pooled per seed) the test rows, each row's values averaged over the seeds. Seeds of one split
share its test rows, so the spread over members is kept beside the headline, labelled, but never used as the
headline.
"""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from runner.config.metric_names import metric, metric_range
from runner.evaluate.metrics import per_example, prediction_arrays, score_members
from runner.evaluate.resample import seed_averaged
from runner.evaluate.stats import Z95, in_range, inverse_root_scale, mean_ci, nadeau_bengio_se, t975

# Percentile intervals read the 2.5% and 97.5% tails: ~1000 resamples place them well (Efron & Tibshirani).
BOOTSTRAP_RESAMPLES = 1000
# Resampled predictions per table (resamples x predictions of a model): pooled leave-one-out validation
# (n rows x 0.2n validation rows each) gets fewer resamples, never under MIN_RESAMPLES, so its time stays
# near linear in the predictions.
BOOTSTRAP_BUDGET, MIN_RESAMPLES = 50_000_000, 200


@dataclass(frozen=True)
class Units:
    """What the headline interval of a predictions table is over, read from the rows each member tested."""

    kind: str  # "rows" (one split), "folds" (k-fold) or "repeated" (k-fold repeated: Nadeau–Bengio)
    split: pd.Series  # member -> split number; members of one split tested the same rows
    n_rows: int  # distinct rows tested
    n_test: float  # mean rows per split
    seeds: int  # members per split
    repeats: int  # k-fold repeats (1 unless repeated)

    @classmethod
    def of(cls, predictions: pd.DataFrame) -> "Units":
        rows = predictions.groupby("member", sort=True)["row"].unique()
        keys = rows.map(lambda r: np.sort(r).tobytes())
        split = pd.Series(pd.factorize(keys)[0], index=rows.index)
        sizes = rows.map(len).groupby(split).first()
        n_rows = int(predictions["row"].nunique())
        repeats = int(predictions["repeat"].nunique()) if "repeat" in predictions else 1
        if len(sizes) == 1:
            kind = "rows"
        else:  # (validation sets of k-fold overlap without repeats: still "folds")
            kind = "repeated" if repeats > 1 else "folds"
        return cls(kind, split, n_rows, float(sizes.mean()), int(split.value_counts().max()), repeats)

    @property
    def over(self) -> str:
        """results.json's "over": what the headline ± is over."""
        n_splits = int(self.split.nunique())
        if self.kind == "rows":
            return f"{self.n_rows} test rows" + (f", {self.seeds} seeds averaged per row" if self.seeds > 1 else "")
        seeds = f", {self.seeds} seeds averaged per fold" if self.seeds > 1 else ""
        if self.kind == "folds":
            return f"{n_splits} folds{seeds}"
        repeats = self.repeats
        return f"{n_splits // repeats} folds x {repeats} repeats, Nadeau–Bengio corrected{seeds}"


def summarize(predictions: pd.DataFrame, task: str, classes=None, baselines: dict[str, pd.DataFrame] | None = None,
              resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """{"over", "metrics", "baselines"} of results.json; every interval stays in its metric's range."""
    return {
        "over": Units.of(predictions).over,
        "metrics": summarize_table(predictions, task, classes, resamples),
        "baselines": {name: summarize_table(table, task, classes, resamples)
                      for name, table in (baselines or {}).items()},
    }


def summarize_table(predictions: pd.DataFrame, task: str, classes=None, resamples: int = BOOTSTRAP_RESAMPLES,
                    rows_word: str = "test rows") -> dict[str, dict]:
    """{"test/<metric>": interval dict} for one predictions table: the headline, and the others in "others"."""
    units = Units.of(predictions)
    per_member = score_members(predictions, task, classes)
    if units.kind == "rows":
        out = _over_rows(predictions, per_member, task, classes, resamples, units, rows_word)
    else:
        out = _over_folds(predictions, per_member, task, classes, units)
    if len(per_member) > 1 and len(per_member) > units.split.nunique():
        shared = "share the test rows" if units.kind == "rows" else "of a fold share its test rows"
        for name, d in out.items():
            d.setdefault("others", {})["members"] = {
                **mean_ci(per_member[name]), "over": f"{len(per_member)} members (seeds {shared}: too narrow)"}
    for name, d in out.items():
        for key, other in d.get("others", {}).items():
            d["others"][key] = _clipped(other, name, task, "members" if key == "members" else "folds")
    return {f"test/{name}": d for name, d in out.items()}


def _clipped(d: dict, name: str, task: str, unit: str) -> dict:
    """An interval under "others" kept inside its metric's range, as the headline is (no Wilson: it stays the
    interval its "over" names, only clipped)."""
    low, high = metric_range(name, task)
    out = in_range(d, low, high, unit=unit)
    if d.get("interval") and d.get("ci95"):  # it said how it was made: keep that, and say if it was clipped
        out["interval"] = d["interval"] + (f", clipped to [{low:g}, {high:g}]" if out["ci95"] != d["ci95"] else "")
    return out


def _over_folds(predictions, per_member: pd.DataFrame, task: str, classes, units: Units) -> dict[str, dict]:
    """k-fold: the spread of the fold scores (seeds averaged within each fold), its SE never under the test rows'.

    Nadeau–Bengio's correction when repeated, and for the skewed losses (MSE, MAE, log loss, 1 − R²) on any
    k-fold; the skewed losses' interval is on the inverse-root scale, RMSE the root of MSE's. In issue 36's
    simulation (bench/coverage.py: 400 draws each of normal, centred lognormal, Student's t₃ and
    heteroscedastic noise, k = 5 and 10, 1 and 3 seeds) the folds' MSE on the log scale covered as little as
    0.80, this rule at least 0.935.
    """
    per_split = per_member.groupby(units.split.loc[per_member.index]).mean()
    rows_se = _rows_se(predictions, task, classes)
    out = {}
    for name in per_member.columns:
        d = mean_ci(per_split[name])
        methods = []
        if units.kind == "repeated" or metric(name).skewed:
            se = nadeau_bengio_se(per_split[name], units.n_rows - units.n_test, units.n_test)
            if se is not None:
                folds = {**d, "over": f"{d['n']} folds, uncorrected (folds share training rows: too narrow)"}
                d = {**d, "se": se, "others": {"folds": folds}}
                methods.append("Nadeau–Bengio")
        floor = rows_se.get(name)
        if d["se"] is not None and floor is not None and floor > d["se"]:
            # A few folds that happened to score alike must not claim more than their test rows allow.
            d["se"] = floor
            methods.append(f"SE floored at the {units.n_rows} test rows' SE")
        # A few fold scores estimate their own sd: Student's t (2.26 for 10 folds), as Nadeau and Bengio's
        # corrected test uses. With 1.96, 10-fold headlines covered the truth in 34 of 40 and 56 of 60
        # simulated runs (tests/test_coverage.py's task, two seeds).
        z = t975(d["n"] - 1) if d["n"] >= 2 else Z95
        if d["se"] is not None:
            d["ci95"] = d["ci95_t"] = [d["mean"] - z * d["se"], d["mean"] + z * d["se"]]
        if metric(name).skewed and d["se"] and _loss(name, d["mean"]) > 0:
            out[name] = _skewed_loss(name, d, methods, z)
        else:
            out[name] = _bounded({**d, "method": "; ".join(methods)} if methods else d, name, task,
                                 units.n_rows, "folds", z)
    if "mse" in out and "rmse" in out:
        out["rmse"] = _root_of_mse(out["mse"], out["rmse"])
    return out


def _rows_se(predictions, task, classes) -> dict[str, float]:
    """The SE over the test rows (each row's values averaged over the members that tested it) of each metric
    that is a mean over rows: the floor of a headline over folds."""
    z = per_example(task, *prediction_arrays(predictions, task, classes), classes)
    rows = predictions["row"].to_numpy()
    return {name: se for name, values in z.items()
            if (se := mean_ci(pd.Series(values).groupby(rows).mean())["se"]) is not None}


def _loss(name: str, mean: float) -> float:
    """The loss a skewed metric's interval is taken on: the metric itself, or 1 − R² (lower is better)."""
    return 1 - mean if name == "r2" else mean


def _skewed_loss(name: str, d: dict, methods: list[str], z: float) -> dict:
    """A skewed loss's interval over folds: mean ± z·SE on the inverse-root scale (stats.inverse_root_scale).

    With the log scale alone the folds' MSE covered 0.80–0.83 under lognormal and t₃ noise: the upper end
    must reach further above when the samples that miss the rare large losses score low with a small SE.
    """
    lo, hi = inverse_root_scale(_loss(name, d["mean"]), d["se"], z)
    how = f"inverse-root scale: mean/(1 ± {z:.3g}·SE/(2·mean))² (Student's t, {d['n'] - 1} df)"
    if name == "r2":  # the interval of 1 − R², turned back
        lo, hi = 1 - hi, 1 - lo
        how = "1 − R² on the " + how.replace("mean", "(1 − R²)")
    return {**d, "ci95": [lo, hi], "ci95_t": [lo, hi], "interval": "; ".join([*methods, how])}


def _root_of_mse(mse: dict, rmse: dict) -> dict:
    """k-fold RMSE: the root of the folds' mean MSE, with the root of MSE's interval.

    The mean of the folds' RMSE (each the root of a fold's MSE) is biased low: it stays under "others".
    """
    if mse["mean"] is None or not mse["mean"] > 0 or not mse.get("se"):
        return rmse  # no spread or no error: nothing to transform
    root = math.sqrt(mse["mean"])
    fold_means = {k: rmse[k] for k in ("mean", "sd", "se", "ci95", "ci95_t", "n", "interval")}
    others = {"fold_rmse": {
        **fold_means, "over": f"mean of the {rmse['n']} folds' RMSE (each the root of a fold's MSE: biased low)"}}
    ci = [math.sqrt(x) for x in mse["ci95"]]
    return {"mean": root, "sd": mse["sd"] / (2 * root), "se": mse["se"] / (2 * root), "ci95": ci, "ci95_t": ci,
            "n": mse["n"], "interval": f"√ of the MSE interval ({mse['interval']}); mean = √(mean of the folds' MSE)",
            "others": others}


def _over_rows(predictions, per_member, task, classes, resamples, units: Units, rows_word: str) -> dict[str, dict]:
    """One split: per-example values averaged over the seeds per row; a seed-averaged bootstrap otherwise."""
    z = per_example(task, *prediction_arrays(predictions, task, classes), classes)
    rows = predictions["row"].to_numpy()
    out = {}
    for name, values in z.items():
        per_row = pd.Series(values).groupby(rows).mean()  # one value per row: its seeds' (or repeats') mean
        out[name] = _bounded(mean_ci(per_row), name, task, units.n_rows, rows_word)
    rest = [name for name in per_member.columns if name not in z]
    if rest:
        widest = int(predictions["member"].value_counts().max())
        resamples = min(resamples, max(MIN_RESAMPLES, BOOTSTRAP_BUDGET // widest))
        boot = _bootstrap(predictions, task, classes, rest, resamples)
        for name in rest:
            out[name] = _percentile(float(per_member[name].mean()), boot[name], units.n_rows, resamples, rows_word)
    return {name: out[name] for name in per_member.columns}


def _bootstrap(predictions, task, classes, names, resamples) -> dict[str, np.ndarray]:
    codes, _ = pd.factorize(predictions["row"])  # the resampled unit is a row, however often it was predicted
    tables = []
    for _, index in predictions.groupby("member", sort=True).indices.items():
        tables.append((codes[index], *prediction_arrays(predictions.iloc[index], task, classes)))
    return seed_averaged(task, tables, classes, names, int(codes.max()) + 1, resamples)


def _percentile(mean: float, values: np.ndarray, n: int, resamples: int, rows_word: str) -> dict:
    """A percentile-bootstrap interval dict; "sd" is left out: the bootstrap observes an SE, not a spread of rows."""
    x = values[np.isfinite(values)]
    d = {"mean": mean, "sd": None, "se": None, "ci95": None, "ci95_t": None, "n": n,
         "interval": f"bootstrap percentile ({resamples} resamples of the {rows_word}, seed 0)"}
    if not np.isfinite(mean) or x.size < 2:
        return d
    lo, hi = np.percentile(x, [2.5, 97.5])
    d.update(se=float(x.std(ddof=1)), ci95=[float(lo), float(hi)])
    if lo == hi:
        d["note"] = f"zero spread: all {x.size} resamples scored {lo:.4g}"
    return d


def _bounded(d: dict, name: str, task: str, n_rows: int, unit: str, z: float = Z95) -> dict:
    """`in_range` for metric `name`, with the method named in "interval"."""
    low, high = metric_range(name, task)
    method = d.pop("method", None)
    d = in_range(d, low, high, proportion=metric(name).proportion, n_rows=n_rows, unit=unit, z=z)
    if method and "interval" in d:
        d["interval"] = f"{method}; {d['interval']}"
    return d
