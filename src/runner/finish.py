"""The end of a run: predictions of the trained members -> metrics with intervals -> checkpoints and reports."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from runner import rundir
from runner.config.schema import Config, name_of
from runner.config.sharing import NOT_TRAINING
from runner.console import console
from runner.data.dataset import Dataset
from runner.data.preprocess import Preprocessed, preprocess
from runner.engine.checkpoint import save_checkpoint
from runner.engine.loop import FitResult
from runner.engine.predict import chunked, predict_rows
from runner.errors import RunnerError
from runner.evaluate.averaging_table import averaging_table
from runner.evaluate.baselines import majority_predictions, sklearn_predictions
from runner.evaluate.convergence import under_training
from runner.config.metric_names import default_metric, higher_is_better
from runner.evaluate.metrics import confusion
from runner.evaluate.paired import against
from runner.evaluate.plot_worker import PlotWorker
from runner.evaluate.report import paired_table, results_table, write_reports
from runner.evaluate.headline import Units, summarize, summarize_table
from runner.fit import Fitted, fit_population, model_label
from runner.models import Population
from runner.rundir import artifacts, spreadsheet, timing
from runner.rundir.saved import own_overrides, sweep_overrides
from runner.sampling import record as sample_record
from runner.sampling import sampled
from runner.study import Study
from runner.score_averages import score_averages


def check(study: Study) -> None:
    """Refuse what cannot be scored before anything trains: the selection metric, avg= with a refit."""
    cfg = study.cfg
    higher_is_better(cfg.eval.metric or default_metric(study.dataset.task))  # checks the name
    if cfg.eval.refit and name_of(cfg.avg.name) != "none":
        raise RunnerError("avg= averages the selection fit's checkpoints, but eval.refit=true tests a retrained "
                          "model: use one of them (avg=none or eval.refit=false)")


def finish(study: Study, fitted: Fitted, run_dir: str | Path, clock: timing.Stopwatch,
           plotter: PlotWorker | None = None) -> dict:
    """Everything after the fit of the study's members (`fitted`, alone or cut from a sweep's shared population):
    predictions, refit, files, scores and reports; returns results.json's dict."""
    cfg, run_dir = study.cfg, Path(run_dir)
    dataset, task, over = study.dataset, study.dataset.task, study.over
    selection = cfg.eval.metric or default_metric(task)
    higher = higher_is_better(selection)
    members, pre, model, inputs, result = fitted.members, fitted.pre, fitted.model, fitted.inputs, fitted.result
    diverged = _diverged(result, members)
    kept = [m.index for m in members if m.index not in {d["member"] for d in diverged}]
    if diverged:
        over += f"; {len(diverged)} diverged member{'s' * (len(diverged) > 1)} left out"
    averaging = score_averages(model, inputs, pre, members, result, study.loss, dataset, kept)
    clock.lap("averaging")  # scoring each weight average; nothing when none is asked for
    val_predictions = predict_rows(model, inputs, pre, members, "val", study.loss, dataset)
    tested = fitted
    if cfg.eval.refit:
        # Selection is over: retrain each member on train + val for its selected number of epochs.
        refit_members = [dataclasses.replace(m, train=np.union1d(m.train, m.val), val=m.val[:0]) for m in members]
        clock.lap("predict")
        refit_pre = preprocess(dataset, refit_members)
        clock.lap("preprocess")
        budget = np.maximum(result.best_epoch + 1, 1)
        tested = fit_population(study, refit_members, refit_pre, over + ", refit on train+val", budget, run_dir,
                                "refit")
        clock.lap("train")
    tested_members, tested_pre, tested_model, tested_inputs = tested.members, tested.pre, tested.model, tested.inputs
    predictions = predict_rows(tested_model, tested_inputs, tested_pre, tested_members, "test", study.loss, dataset)
    clock.lap("predict")
    chosen, headline = _greedy(cfg, dataset, _only(predictions, kept), _only(val_predictions, kept))

    # Everything trained goes to disk before scoring starts: a scoring failure never loses the training.
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = dataset.rows
    spreadsheet.write_csv(run_dir / "predictions.csv", artifacts.predictions_frame(val_predictions, predictions, rows))
    history = artifacts.history_frame(result.history, [m.index for m in members])  # selection's history
    spreadsheet.write_csv(run_dir / "metrics.csv", history)
    if name_of(cfg.ensemble.name) == "greedy":  # what `runner predict` combines
        from runner.ensemble.greedy import ensemble_record

        artifacts.write_json(run_dir / "ensemble.json", ensemble_record(chosen, cfg.ensemble.rounds, cfg.ensemble.bags,
                                                                        dataset.classes))
    # The epoch whose weights each member kept: its best on validation, or its last (restore_best=false, or no
    # validation rows).
    best = cfg.trainer.early_stopping.restore_best & (result.best_epoch >= 0)
    kept = dict(zip([m.index for m in members], np.where(best, result.best_epoch, result.epochs_run - 1).tolist()))
    if plotter is not None:
        plotter.send([("curves_plot", run_dir / "curves.png", (history, kept))])  # drawn while this process scores
    selection_split = members if cfg.eval.refit else None
    artifacts.write_json(run_dir / "split_indices.json", artifacts.split_records(tested_members, rows, selection_split))
    _save_checkpoints(run_dir, study, tested_model, result, pre, tested_pre, [d["member"] for d in diverged])
    clock.lap("files")
    experiment = _experiment(run_dir)
    artifacts.write_tensorboard(run_dir / "tensorboard" / experiment[0], history)
    clock.lap("tensorboard")

    results = {
        "task": task,
        "dataset": dataset.name,
        "target": dataset.target,
        **({"positive": dataset.positive} if dataset.positive is not None else {}),
        **({"dropped": dataset.dropped} if dataset.dropped else {}),  # columns left out, and why
        "model": model_label(cfg),
        "members": len(members),
        "plan": over,
        "parameters_per_member": model.parameters_per_member(),
        **({"stacking": model.stacking} if model.stacking else {}),
        **_scores(cfg, dataset, tested_pre, tested_members, headline, _only(val_predictions, kept), clock),
        "selection": {"metric": selection, "higher_is_better": higher},
        "epochs": {"mean_trained": float(result.epochs_run.mean()), "mean_best": float(result.best_epoch.mean() + 1)},
        **({"diverged": diverged} if diverged else {}),
        **({"averaging": averaging} if averaging else {}),
    }
    if name_of(cfg.ensemble.name) == "greedy":  # the ensemble is the headline; the members' mean is kept beside it
        each = _pool(_only(predictions, kept), name_of(cfg.eval.name) == "loo")
        results["headline"] = {"name": "ensemble", "what": f"each split's {cfg.model.name} members combined "
                               "with the weights Caruana's greedy selection chose on its validation rows"}
        results["each_member"] = {"metrics": summarize_table(each, task, dataset.classes), "over": Units.of(each).over}
    if sampled(cfg):  # each seed's own hyperparameters, as its members trained with them
        results["sampled"] = sample_record(cfg, sorted({m.seed for m in members}), task == "regression")
    late = under_training([e for m, e in zip(members, result.best_epoch) if m.index in kept], cfg.trainer.epochs)
    if late:
        results["under_training"] = late
    if name_of(cfg.ensemble.name) != "none":
        from runner.ensemble.run import ensembles  # scipy's optimizer and sklearn's meta-models, only when asked

        results["ensembles"] = ensembles(study, fitted, tested, predictions, val_predictions, run_dir, chosen)
    test_rows = [m.test for m in tested_members]
    results.update(tested_model.test_extras(lambda fn: chunked(fn, tested_model, tested_inputs, test_rows), test_rows))
    if "experts" in results:
        if results["experts"]["max_share"] > 0.95:
            console.print(f"[yellow]warning:[/] one expert takes {results['experts']['max_share']:.0%} of the gate "
                          "mass on a member's test rows (collapse: try loss.moe=per_expert or loss.balance=0.01)")
    clock.lap("ensembles")  # combining members and expert usage; nothing when neither is asked for

    if diverged:
        rundir.update_status(run_dir, diverged=diverged)
    if cfg.trainer.resume and (run_dir / "status.json").exists():
        rundir.update_status(run_dir, status="ok", resume=None)
    console.print(results_table(results))
    versus = paired_table(results)
    if versus is not None and cfg.eval.baselines:  # beside the majority alone it says what the table above says
        console.print(versus)
    if averaging:
        console.print(averaging_table(results))
    if late:
        console.print(f"[yellow]notice:[/] {late['message']}")
    if diverged:
        console.print(f"[bold red]{len(diverged)} of {len(members)} members diverged[/] (members "
                      f"{', '.join(str(d['member']) for d in diverged)}): left out of every table above")
    if "ensembles" in results:
        from runner.ensemble.results import ensemble_table

        console.print(ensemble_table(results))
    _write_hparams(run_dir, cfg, results, clock, experiment, (0, int(history["epoch"].max())))
    # results.json last, with the timing up to here
    write_reports(run_dir, results, history, clock, plotter, plots=draws_plots(cfg), kept=kept)
    console.print(f"run directory: [bold]{run_dir}[/]")
    return results


def _overrides(run_dir: Path) -> list[str]:
    """The overrides Hydra saved for this run, less those that change nothing it learns (trainer.progress)."""
    saved = run_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(saved)] if saved.is_file() else []
    return [o for o in overrides if o.partition("=")[0].lstrip("+~") not in NOT_TRAINING]


def _experiment(run_dir: Path) -> tuple[str, str, list[str]]:
    """The run's TensorBoard run name, from the overrides that set it apart (in a sweep, less those every job
    has); its HPARAMS Trial ID, short and apart from any other run's (the run folder's name, then its parent's:
    `3 · 02-50-38-444600` for a sweep's job 3); and the keys of those overrides."""
    overrides, sweep = _overrides(run_dir), sweep_overrides(run_dir.parent)
    own = overrides if sweep is None else own_overrides(overrides, sweep)
    keys = [artifacts.hparam(o)[0] for o in own if not o.startswith("~")]
    return artifacts.run_name(own), f"{run_dir.name} · {run_dir.parent.name}", keys


def _write_hparams(run_dir: Path, cfg: Config, results: dict, clock: timing.Stopwatch,
                   experiment: tuple[str, str, list[str]], steps: tuple[int, int]) -> None:
    """TensorBoard's hparams data, beside the members' curves in the experiment's run (`experiment`: its name,
    Trial ID and the keys that set it apart): every key of the run's config (a group's choice under the group's
    name: `optim` for optim.name) but those that change nothing it learns, then every override as written, so that whichever run's list TensorBoard
    takes for its HPARAMS tab, it has every run's keys; its validation and test headline under their own tags
    (`headline/...`, apart from the per-epoch `val/...` curves), over the epochs of the curves (`steps`, first
    and last)."""
    import time

    effective = {key.removesuffix(".name"): _plain(value) for key, value in _leaves(dataclasses.asdict(cfg))
                 if key not in NOT_TRAINING}
    effective.update(artifacts.hparam(o) for o in _overrides(run_dir) if not o.startswith("~"))
    metric = results["selection"]["metric"]
    headline = {f"headline/val/{metric}": results["validation"].get(f"val/{metric}", {}).get("mean"),
                f"headline/test/{metric}": results["metrics"].get(f"test/{metric}", {}).get("mean")}
    started_s = time.time() - (time.perf_counter() - clock.start)
    # Marked as differing (TensorBoard shows the first five of those at first): what sets the run apart, and the
    # main choices.
    differs = [*experiment[2], "dataset", "model", "optim", "eval"]
    artifacts.write_hparams(run_dir / "tensorboard" / experiment[0], effective,
                            {k: float("nan") if v is None else v for k, v in headline.items()}, started_s,
                            experiment[1], steps, differs)
    clock.lap("tensorboard")


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested config as (dotted key, value) pairs; lists are values."""
    out = []
    for key, value in tree.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    return out


def _scores(cfg: Config, dataset: Dataset, pre: Preprocessed, tested_members, predictions, val_predictions,
            clock: timing.Stopwatch) -> dict:
    """results.json's over, metrics, baselines, the run's paired differences with them, validation scores and
    confusion matrix, from the predictions."""
    task, classes = dataset.task, dataset.classes
    pooled = name_of(cfg.eval.name) == "loo"  # one test row per member: score each seed's pooled predictions
    # Named for what they are: for a regression, the majority baseline predicts the training mean
    # and `logreg` is a linear regression.
    label = {"majority": "mean", "logreg": "linear"} if task == "regression" else {}
    baselines = {label.get("majority", "majority"): majority_predictions(dataset.y, tested_members, task, classes,
                                                                          constant=pooled)}
    for name in cfg.eval.baselines:
        baselines[label.get(name, name)] = sklearn_predictions(name, pre, dataset.y, tested_members, task, classes)
    clock.lap("baselines")  # fitting and predicting; scoring them is part of scoring
    baselines = {k: _pool(v, pooled) for k, v in baselines.items()}
    summary = summarize(_pool(predictions, pooled), task, classes, baselines)
    # The run minus each baseline on the same test units, as a sweep's summary compares its jobs with the best.
    summary["vs_baselines"] = against(_pool(predictions, pooled), baselines, summary["metrics"], task, classes)
    validation = {}
    if len(val_predictions):
        validation = summarize_table(_pool(val_predictions, pooled), task, classes, rows_word="validation rows")
    out = {
        **summary,
        "validation": {k.replace("test/", "val/", 1): v for k, v in validation.items()},
        **({"confusion": _confusion(predictions, classes)} if classes else {}),
    }
    clock.lap("scoring")
    return out


def _greedy(cfg: Config, dataset: Dataset, predictions, val_predictions):
    """(each split's greedy selection, the table the headline scores): with ensemble=greedy the selected ensembles'
    test predictions, with ensemble=compare the members' (the selection is one of the ensembles compared)."""
    name = name_of(cfg.ensemble.name)
    if name != "greedy" and not (name == "compare" and len(val_predictions)):
        return None, predictions
    from runner.ensemble.greedy import ensemble_predictions, select

    chosen = select(val_predictions, dataset.classes, cfg.ensemble.rounds, cfg.ensemble.bags)
    return chosen, ensemble_predictions(predictions, chosen, dataset.classes) if name == "greedy" else predictions


def _diverged(result: FitResult, members) -> list[dict]:
    """The members whose loss went non-finite or exploded, with the epoch; none may pass for a result."""
    out = [{"member": m.index, "epoch": int(e)} for m, e in zip(members, result.diverged_epoch) if e >= 0]
    start = result.nonfinite_at_start
    if len(out) == len(members) and start is not None and start.all():
        raise RunnerError("the training loss is not finite at the initial weights, before any step (every member, "
                          "epoch 0): the model's forward or the data gives NaN or inf, which optim.lr cannot cure; "
                          "check the forward (log of 0, division by zero, an uninitialized parameter)")
    if len(out) == len(members):
        raise RunnerError(f"every member diverged (training loss not finite or exploding, first at epoch "
                          f"{min(d['epoch'] for d in out)}); lower optim.lr or clip gradients "
                          "(trainer.grad_clip.norm=1.0)")
    return out


def _only(predictions, kept: list[int]):
    """The predictions of the members in `kept` (diverged members are left out)."""
    return predictions[predictions["member"].isin(kept)] if len(predictions) else predictions


def _confusion(predictions, classes: list[str]) -> dict:
    """The confusion matrix summed over every member's test predictions, as counts and row shares."""
    counts = confusion(predictions["y_true"], predictions["y_pred"], classes)
    shares = confusion(predictions["y_true"], predictions["y_pred"], classes, normalize=True)
    over = "all test predictions" if predictions["member"].nunique() == 1 else "all members' test predictions, summed"
    return {"classes": list(classes), "counts": counts.to_numpy().tolist(),
            "row_normalized": [[None if v != v else v for v in row] for row in shares.to_numpy().tolist()],
            "over": over}


def _pool(predictions, pooled: bool):
    """For leave-one-out, treat each seed's predictions as one member scored on all rows."""
    if not pooled or predictions.empty:
        return predictions
    return predictions.assign(member=predictions["seed"] if "seed" in predictions else 0)  # an ensemble: one


def _save_checkpoints(run_dir: Path, study: Study, model: Population, result: FitResult, pre: Preprocessed,
                      tested_pre: Preprocessed, diverged: list[int]) -> None:
    """best.pt and last.pt (and refit.pt): weights, the model spec, input shape, classes, fitted preprocessing
    and the ids of the `diverged` members (left out of every table, and of `runner predict`'s mean)."""
    cfg = study.cfg
    info = [m.coordinates() for m in study.members]
    spec = {f.name: _plain(getattr(cfg.model, f.name)) for f in dataclasses.fields(cfg.model)}
    extra = {"model": cfg.model.name, "model_config": spec, "input_shape": list(study.input_shape),
             "features": pre.names, "classes": study.dataset.classes, "loss": study.loss,
             "diverged": [int(i) for i in diverged], **_columns(study.dataset, list(cfg.dataset.na_values))}
    folder = run_dir / "checkpoints"
    save_checkpoint(folder / "best.pt", result.best, result.best_stats, model, info, extra, pre.arrays())
    save_checkpoint(folder / "last.pt", result.last, result.last_stats, model, info, extra, pre.arrays())
    for name, averaged in result.averages.items():
        save_checkpoint(folder / f"avg_{name}.pt", averaged.flat, averaged.stats, model, info,
                        {**extra, "epochs": averaged.epochs}, pre.arrays())
    if cfg.eval.refit:
        save_checkpoint(folder / "refit.pt", model.flat, model.stats, model, info, extra, tested_pre.arrays())


def _columns(dataset: Dataset, na_values: list[str]) -> dict:
    """What `runner predict` needs to rebuild a table's inputs from a new file, as training read its own (the
    cell texts read as missing, `na_values`, among them); images: nothing."""
    if dataset.images is not None:
        return {}
    return {"task": dataset.task, "target": dataset.target, "numeric": list(dataset.numeric),
            "categorical": list(dataset.categorical), "categories": {c: list(v) for c, v in dataset.categories.items()},
            "na_values": [str(v) for v in na_values], "codes": dataset.codes}


def _plain(value):
    """A config value as plain data (enums as their strings), loadable with weights_only=True."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else name_of(value) if hasattr(
        value, "value") else value


def draws_plots(cfg: Config) -> bool:
    """`plots`, or when unset: yes for a single run, no for a job of a sweep (-m)."""
    if cfg.plots is not None:
        return cfg.plots
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
