"""results.json's `ensembles`: each combination asked for, scored per split beside the single members."""

import numpy as np
import pandas as pd

from runner.ensemble.combine import COMBINES, fold_ensembles
from runner.evaluate.metrics import score_members
from runner.evaluate.summary import Units, summarize_table


def ensemble_results(cfg, test: pd.DataFrame, val: pd.DataFrame | None, task: str, classes: list[str],
                     pooled: bool, unit: str = "member") -> dict:
    """{combine: {"metrics", "weights", "members", "ablation"}} for `cfg.combine` (or all of them with
    ensemble=compare). `unit` names the column of the ensemble's members (`unit` for dropout passes)."""
    names = COMBINES if str(getattr(cfg.name, "value", cfg.name)) == "compare" else [str(getattr(cfg.combine, "value",
                                                                                                   cfg.combine))]
    if task == "regression":
        names = [n for n in names if n in ("mean", "linear")]
    size = test.groupby(["repeat", "fold"])[unit].nunique().iloc[0]
    out = {}
    for how in names:
        table, weights = fold_ensembles(test, val, classes, how, cfg.weights, unit)
        scored = table.assign(member=0) if pooled else table  # leave-one-out: every fold's one row, pooled
        out[how] = {
            "metrics": summarize_table(scored, task, classes),
            "over": Units.of(scored).over,
            "members": int(size),
            "weights": np.mean(weights, axis=0).round(4).tolist(),
            "ablation": _ablation(test, classes, how, weights, unit, task, pooled),
        }
    return out


def best_single(test: pd.DataFrame, val: pd.DataFrame, task: str, classes: list[str], pooled: bool) -> dict:
    """The best single member of each split, chosen on its validation rows and scored once on test."""
    metric, higher = ("rmse", False) if task == "regression" else ("accuracy", True)
    by_member = score_members(val, task, classes)[metric]
    keys = val.groupby("member")[["repeat", "fold"]].first()
    ranked = by_member.sort_values(ascending=not higher, kind="stable")
    chosen = keys.loc[ranked.index].groupby(["repeat", "fold"]).head(1).index
    table = test[test["member"].isin(chosen)]
    table = table.assign(member=0) if pooled else table
    return {"metrics": summarize_table(table, task, classes), "over": Units.of(table).over, "members": 1}


def _ablation(test, classes, how, weights: list[np.ndarray], unit, task, pooled) -> dict:
    """Each member position's Δ of the main metric when it is left out of every split's ensemble, the others
    keeping their weights (renormalized to sum 1 for a linear mixture; no refit)."""
    metric = "rmse" if task == "regression" else "accuracy"
    rank = test.groupby(["repeat", "fold"])[unit].rank(method="dense").astype(int) - 1
    positions = int(rank.max()) + 1
    if positions < 2 or positions > 20:
        return {}
    test = test.assign(position=rank)

    def value(table):
        table = table.assign(member=0) if pooled else table
        return float(score_members(table, task, classes)[metric].mean())

    full = value(fold_ensembles(test, None, classes, how, weights, unit)[0])
    out = {}
    for p in range(positions):
        kept = [np.delete(w, p) for w in weights]
        if how in ("mean", "linear", "vote"):
            kept = [w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w)) for w in kept]
        out[str(p)] = round(value(fold_ensembles(test[test.position != p], None, classes, how, kept, unit)[0]) - full, 4)
    return {"metric": metric, "delta_without": out}


def ensemble_table(results: dict):
    """A rich table: the single members' headline beside each ensemble, for the main metric and log loss."""
    from rich.table import Table

    task = results["task"]
    names = ["rmse", "mae"] if task == "regression" else ["accuracy", "log_loss"]
    t = Table(title="ensembles vs single members: test mean [95% interval]", title_justify="left")
    t.add_column("model")
    for name in names:
        t.add_column(name, justify="right")
    t.add_column("members", justify="right")
    t.add_column("parameters", justify="right")
    t.add_column("± over", justify="left")

    def cell(d):
        if not d or d.get("mean") is None:
            return "n/a"
        ci = d.get("ci95")
        return f"{d['mean']:.3f}" + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")

    t.add_row("each member", *[cell(results["metrics"].get(f"test/{n}")) for n in names], "1",
              f"{results.get('parameters_per_member', 0):,}", results["over"])
    for how, d in results["ensembles"].items():
        over = d.get("over", "")
        params = d["parameters"]["student"] if isinstance(d.get("parameters"), dict) else d.get("parameters", 0)
        t.add_row(how, *[cell(d["metrics"].get(f"test/{n}")) for n in names], str(d["members"]), f"{params:,}", over)
    return t
