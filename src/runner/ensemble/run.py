"""The ensembles a run asks for, end to end: combinations of each split's members, stacking and blending."""

from pathlib import Path

import numpy as np
import pandas as pd

from runner.config.schema import name_of
from runner.console import console
from runner.data.preprocess import preprocess
from runner.data.splits import inner_plan
from runner.engine.predict import dropout_passes, member_outputs, seconds_per_row
from runner.ensemble import stacking as st
from runner.ensemble.distill import distill
from runner.ensemble.greedy import ensemble_predictions, loss_name
from runner.ensemble.results import best_single, best_single_table, ensemble_results
from runner.evaluate.paired import against
from runner.evaluate.headline import Units, summarize_table
from runner.fit import Fitted, fit_population
from runner.rundir import artifacts


def ensembles(study, selected: Fitted, tested: Fitted, predictions: pd.DataFrame, val_predictions: pd.DataFrame,
              run_dir: Path | None = None, chosen: list[dict] | None = None) -> dict:
    """results.json's `ensembles`. `selected` and `tested` are the population that chose its epochs on validation
    and the one scored on test (the same without refit).
    The models stacking and blending train go into `run_dir`'s split_indices.json, with their roles. `chosen`:
    each split's greedy selection (runner.ensemble.greedy.select), scored and paired with the best single member
    and with the members' mean."""
    cfg, dataset = study.cfg, study.dataset
    inner_models: dict[int, list[dict]] = {}
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
            test = dropout_passes(tested.model, tested.inputs, tested.pre, tested.members, "test", study.loss,
                                  dataset, passes)
            val = dropout_passes(selected.model, selected.inputs, selected.pre, selected.members, "val", study.loss,
                                 dataset, passes)
        out.update(ensemble_results(cfg.ensemble, test, val, dataset.task, dataset.classes, pooled, unit))
    def score(table: pd.DataFrame, members: int) -> dict:
        table = table.assign(member=0) if pooled else table
        return {"metrics": summarize_table(table, dataset.task, dataset.classes), "over": Units.of(table).over,
                "members": members}

    if chosen is not None:
        out["greedy"] = _greedy(study, chosen, predictions, val_predictions, pooled)
    if name in ("stacking", "compare"):
        stacked, records = _stacking(study, tested.members, tested.pre)
        out["stacking"] = score(stacked, cfg.ensemble.inner_k)
        for member, mine in records.items():
            inner_models.setdefault(member, []).extend(mine)
    if name in ("distill", "compare"):
        students, cost = distill(study, selected)
        out["distill"] = {**score(students, 1), **cost}
    if name in ("blending", "compare") and len(val_predictions):
        held_out, blended, strengths, records = _blending(study, tested.members, tested.pre, predictions, val_predictions)
        for member, record in records.items():
            inner_models.setdefault(member, []).append(record)
        out["blending"] = {**score(blended, 1), "meta_strength": strengths,
                           "holdout": {k.replace("test/", "holdout/", 1): v for k, v in summarize_table(
                               held_out, dataset.task, dataset.classes, rows_word="hold-out rows").items()}}
    # What each answer costs: a combination runs all its members (stacking: its inner models; the meta-model's
    # share is negligible), so one member's measured time per row times their number.
    per_member = tested.model.parameters_per_member()
    one = seconds_per_row(tested.model, tested.inputs, tested.members, study.loss)
    for key, d in out.items():
        models = cfg.ensemble.inner_k if key == "stacking" else d["members"]
        d.setdefault("parameters", per_member * models)
        d.setdefault("inference_s_per_row", one * models)
    if inner_models and run_dir is not None:
        artifacts.add_inner_models(Path(run_dir) / "split_indices.json", inner_models)
    return out


def _greedy(study, chosen: list[dict], predictions, val_predictions, pooled: bool) -> dict:
    """The greedy ensemble's test scores, its selection per split, and its paired differences with the best single
    member (chosen on validation) and with the members' mean, on the same test units."""
    dataset, cfg = study.dataset, study.cfg
    table = ensemble_predictions(predictions, chosen, dataset.classes)
    scored = table.assign(member=0) if pooled else table
    metrics = summarize_table(scored, dataset.task, dataset.classes)
    single = best_single_table(predictions, val_predictions, dataset.task, dataset.classes)
    return {"metrics": metrics, "over": Units.of(scored).over,
            "members": max(len(r["members"]) for r in chosen),  # what the largest split's ensemble runs
            "rounds": cfg.ensemble.rounds, "bags": cfg.ensemble.bags,
            "selected_on": f"val/{loss_name(dataset.classes)}", "folds": chosen,
            "vs": against(table, {"best single": single, "each member": predictions}, metrics, dataset.task,
                          dataset.classes)}


def _stacking(study, outer, pre) -> tuple[pd.DataFrame, dict[int, list[dict]]]:
    """Train the inner members (all splits' at once, one population), then one meta-model per outer member;
    returns the meta-models' test predictions and, per outer member, the records of what it trained."""
    cfg, dataset = study.cfg, study.dataset
    inner = inner_plan(outer, dataset.y, dataset.task, cfg.eval, cfg.ensemble.inner_k)
    inner_pre = preprocess(dataset, inner)
    console.print(f"stacking: {len(inner)} inner members ({cfg.ensemble.inner_k} inner folds per member)")
    fitted = fit_population(study, inner, inner_pre, None, keep_best=True)
    regression = dataset.task == "regression"
    test = _units(member_outputs(fitted.model, fitted.inputs, [m.test for m in inner], study.loss), inner_pre,
                  regression)
    held = _units(member_outputs(fitted.model, fitted.inputs, [m.oof for m in inner], study.loss), inner_pre,
                  regression)
    frames = []
    for m, (rows, oof, test_features) in zip(outer, st.out_of_fold(inner, test, held, outer)):
        X = pre[m.index] if cfg.ensemble.passthrough else None
        train_x = st.features(oof, None if X is None else X[rows])
        test_x = st.features(test_features, None if X is None else X[m.test])
        outputs = st.fit_meta(dataset.task, dataset.classes, "ridge" if dataset.task == "regression" else "logreg",
                              train_x, dataset.y[rows], test_x)
        frames.append(st.table(m, m.test, outputs, dataset))
    records = {m.index: st.stacking_records(inner, m, dataset.rows) for m in outer}
    return pd.concat(frames, ignore_index=True), records


def _blending(study, members, pre, predictions, val_predictions) -> tuple[pd.DataFrame, pd.DataFrame, list, dict]:
    """Blending with the lecture's four roles: each member trained on its train rows (chose its epochs on val);
    one meta-model per member trained on half of its validation rows, its regularization chosen on the other
    half (the hold-out), then answering once on test. Returns the hold-out and test predictions tables, each
    meta-model's chosen strength and, per member, the record of its meta-model's rows."""
    dataset, cfg = study.dataset, study.cfg
    columns = [c for c in predictions.columns if c.startswith("p_")] or ["y_pred"]
    kind = "ridge" if dataset.task == "regression" else "logreg"
    holdouts, tests, strengths, records = [], [], [], {}
    for m in members:
        val = val_predictions[val_predictions.member == m.index].set_index("row")
        test = predictions[predictions.member == m.index].set_index("row").sort_index()
        meta, held = st.halves(val.index.to_numpy(), dataset.y, m.seed, dataset.task != "regression")
        inputs = pre[m.index] if cfg.ensemble.passthrough else None

        def features(frame, rows):
            return st.features(frame.loc[rows, columns].to_numpy(float), None if inputs is None else inputs[rows])

        rows_t = test.index.to_numpy()
        strength, held_out, outputs = st.fit_meta_on_holdout(
            dataset.task, dataset.classes, kind, (features(val, meta), dataset.y[meta]),
            (features(val, held), dataset.y[held]), features(test, rows_t))
        holdouts.append(st.table(m, held, held_out, dataset))
        tests.append(st.table(m, rows_t, outputs, dataset))
        strengths.append(strength)
        records[m.index] = st.blending_record(m, meta, held, dataset.rows)
    warning = st.blending_warning(min(len(t) for t in holdouts))
    if warning:
        console.print(f"[yellow]warning:[/] {warning}")
    return pd.concat(holdouts, ignore_index=True), pd.concat(tests, ignore_index=True), strengths, records


def _units(outputs: np.ndarray, pre, regression: bool) -> np.ndarray:
    """Regression outputs back in the target's units (each member standardized its own way); probabilities as they are."""
    return outputs * pre.y_scale[:, None, None] + pre.y_mean[:, None, None] if regression else outputs
