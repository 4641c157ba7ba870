"""results.json's `ensembles`: each combination asked for, scored per split beside the single members."""

import numpy as np
import pandas as pd

from runner.ensemble.combine import COMBINES, fold_ensembles
from runner.evaluate.metrics import score_members
from runner.evaluate.stats import fmt_interval
from runner.evaluate.headline import Units, summarize_table


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
    table = best_single_table(test, val, task, classes)
    table = table.assign(member=0) if pooled else table
    return {"metrics": summarize_table(table, task, classes), "over": Units.of(table).over, "members": 1}


def best_single_table(test: pd.DataFrame, val: pd.DataFrame, task: str, classes: list[str]) -> pd.DataFrame:
    """The test predictions of each split's member with the best validation accuracy (rmse for a regression;
    ties: the lowest member id)."""
    metric, higher = ("rmse", False) if task == "regression" else ("accuracy", True)
    by_member = score_members(val, task, classes)[metric]
    keys = val.groupby("member")[["repeat", "fold"]].first()
    ranked = by_member.sort_values(ascending=not higher, kind="stable")
    chosen = keys.loc[ranked.index].groupby(["repeat", "fold"]).head(1).index
    return test[test["member"].isin(chosen)]


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
    """A rich table that fits 80 columns: the single members' headline beside each ensemble, for the main
    metric, with what each costs (parameters, microseconds per predicted row); what each interval is over is
    a footnote letter (the texts are long)."""
    from rich import box
    from rich.table import Table

    ensembles = results["ensembles"]
    name = "rmse" if results["task"] == "regression" else "accuracy"
    one = (ensembles.get("best single") or {}).get("inference_s_per_row")
    from runner.evaluate.report import each_member

    metrics, over = each_member(results)
    rows = [("each member", metrics, 1, results.get("parameters_per_member", 0), one, over)]
    rows += [(how, d["metrics"], d["members"], d.get("parameters", 0), d.get("inference_s_per_row"), d.get("over", ""))
             for how, d in ensembles.items()]
    overs = list(dict.fromkeys(row[-1] for row in rows))
    t = Table(title=f"ensembles vs single members: test {name}, mean [95% interval]", title_justify="left",
              box=box.SIMPLE_HEAD)
    for column in ("model", name, "members", "parameters", "µs/row", *(["over"] if len(overs) > 1 else [])):
        t.add_column(column, justify="left" if column in ("model", "over") else "right")
    for how, metrics, members, params, seconds, over in rows:
        cost = "" if seconds is None else f"{seconds * 1e6:.2f}"
        t.add_row(how, fmt_interval(metrics.get(f"test/{name}")), str(members), f"{params:,}", cost,
                  *([chr(ord("a") + overs.index(over))] if len(overs) > 1 else []))
    notes = [f"{chr(ord('a') + i)}: over {over}" for i, over in enumerate(overs)] if len(overs) > 1 else [
        f"intervals over {overs[0]}"]
    t.caption, t.caption_justify = "; ".join(notes) + "; µs/row: prediction time per row", "left"
    return t
