"""The ensembles a run asks for, end to end: combinations of each split's members, stacking and blending."""

import numpy as np
import pandas as pd
import torch

from runner.config import name_of
from runner.console import console
from runner.data.preprocess import preprocess
from runner.data.splits import inner_plan
from runner.engine.loop import fit
from runner.engine.predict import dropout_passes, member_outputs
from runner.ensemble import stacking as st
from runner.ensemble.results import best_single, ensemble_results
from runner.evaluate.summary import Units, summarize_table

META = ("stacking", "blending")


def ensembles(study, selected, tested, predictions: pd.DataFrame, val_predictions: pd.DataFrame) -> dict:
    """results.json's `ensembles`. `selected` and `tested` are (model, inputs, preprocessing, members) of the
    population that chose its epochs on validation and of the one scored on test (the same without refit)."""
    cfg, dataset = study.cfg, study.dataset
    name = name_of(cfg.ensemble.name)
    pooled = name_of(cfg.eval.name) == "loo"
    out = {}
    if len(val_predictions):
        out["best single"] = best_single(predictions, val_predictions, dataset.task, dataset.classes, pooled)
    if name in ("seeds", "compare"):
        unit = "member"
        test, val = predictions, val_predictions
        if cfg.ensemble.mc_dropout:
            passes, unit = cfg.ensemble.mc_dropout, "unit"
            test = dropout_passes(*tested, "test", study.loss, dataset, passes)
            val = dropout_passes(*selected, "val", study.loss, dataset, passes)
        out.update(ensemble_results(cfg.ensemble, test, val, dataset.task, dataset.classes, pooled, unit))
    def score(table: pd.DataFrame, members: int) -> dict:
        table = table.assign(member=0) if pooled else table
        return {"metrics": summarize_table(table, dataset.task, dataset.classes), "over": Units.of(table).over,
                "members": members}

    if name in ("stacking", "compare"):
        out["stacking"] = score(_stacking(study, tested[3], tested[2]), cfg.ensemble.inner_k)
    if name in ("distill", "compare"):
        from runner.ensemble.distill import distill

        students, cost = distill(study, selected)
        out["distill"] = {**score(students, 1), **cost}
    if name in ("blending", "compare") and len(val_predictions):
        out["blending"] = score(_blending(study, tested[3], tested[2], predictions, val_predictions), 1)
    per_member = tested[0].parameters_per_member()
    for key, d in out.items():
        d.setdefault("parameters", per_member * (cfg.ensemble.inner_k if key == "stacking" else d["members"]))
    return out


def _stacking(study, outer, pre) -> pd.DataFrame:
    """Train the inner members (all splits' at once, one population), then one meta-model per outer member."""
    from runner.study import population

    cfg, dataset = study.cfg, study.dataset
    inner = inner_plan(outer, dataset.y, dataset.task, cfg.eval, cfg.ensemble.inner_k)
    inner_pre = preprocess(dataset, inner)
    console.print(f"stacking: {len(inner)} inner members ({cfg.ensemble.inner_k} inner folds per member)")
    model, data = population(study, inner, inner_pre)
    result = fit(model, data, cfg, study.loss)
    with torch.no_grad():
        model.flat.copy_(result.best)
        model.stats.copy_(result.best_stats)
    regression = dataset.task == "regression"
    test = _units(member_outputs(model, data.inputs, [m.test for m in inner], study.loss), inner_pre, regression)
    held = _units(member_outputs(model, data.inputs, [m.oof for m in inner], study.loss), inner_pre, regression)
    frames = []
    for m, (rows, oof, test_features) in zip(outer, st.out_of_fold(inner, test, held, outer)):
        X = pre[m.index] if cfg.ensemble.passthrough else None
        train_x = st.features(oof, None if X is None else X[rows])
        test_x = st.features(test_features, None if X is None else X[m.test])
        outputs = st.fit_meta(dataset.task, dataset.classes, "ridge" if dataset.task == "regression" else "logreg",
                              train_x, dataset.y[rows], test_x)
        frames.append(st.table(m, m.test, outputs, dataset))
    return pd.concat(frames, ignore_index=True)


def _blending(study, members, pre, predictions, val_predictions) -> pd.DataFrame:
    """One meta-model per member, trained on its validation predictions, answering on its test rows."""
    dataset, cfg = study.dataset, study.cfg
    columns = [c for c in predictions.columns if c.startswith("p_")] or ["y_pred"]
    warning = st.blending_warning(int(val_predictions.groupby("member").size().min()))
    if warning:
        console.print(f"[yellow]warning:[/] {warning}")
    frames = []
    for m in members:
        val = val_predictions[val_predictions.member == m.index].sort_values("row")
        test = predictions[predictions.member == m.index].sort_values("row")
        X = pre[m.index] if cfg.ensemble.passthrough else None
        rows_v, rows_t = val["row"].to_numpy(), test["row"].to_numpy()
        train_x = st.features(val[columns].to_numpy(float), None if X is None else X[rows_v])
        test_x = st.features(test[columns].to_numpy(float), None if X is None else X[rows_t])
        outputs = st.fit_meta(dataset.task, dataset.classes, "ridge" if dataset.task == "regression" else "logreg",
                              train_x, dataset.y[rows_v], test_x)
        frames.append(st.table(m, rows_t, outputs, dataset))
    return pd.concat(frames, ignore_index=True)


def _units(outputs: np.ndarray, pre, regression: bool) -> np.ndarray:
    """Regression outputs back in the target's units (each member standardized its own way); probabilities as they are."""
    return outputs * pre.y_scale[:, None, None] + pre.y_mean[:, None, None] if regression else outputs
