"""One experiment end to end: data -> population plan -> features -> engine -> predictions -> report."""

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from runner import artifacts
from runner.config import Config, name_of
from runner.console import console, epoch_progress
from runner.data.datasets import Dataset
from runner.data.preprocess import Preprocessed, preprocess
from runner.engine.checkpoint import save_checkpoint
from runner.engine.inputs import MemberInputs
from runner.engine.loop import FitResult, fit
from runner.engine.predict import expert_usage, predict_rows
from runner.errors import RunnerError
from runner.evaluate.baselines import majority_predictions, sklearn_predictions
from runner.evaluate.metrics import confusion, default_metric, higher_is_better
from runner.evaluate.report import results_table, write_reports
from runner.evaluate.summary import summarize, summarize_table
from runner.models import Population
from runner.study import Study, plan, population


def train(cfg: Config, run_dir: str | Path) -> dict:
    """Train the configured population, write the run directory and return results.json's dict."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    study = plan(cfg)
    dataset, task, members, over = study.dataset, study.dataset.task, study.members, study.over
    _check_monitor(cfg.trainer.early_stopping.monitor, task)
    selection = cfg.eval.metric or default_metric(task)
    higher = higher_is_better(selection)  # also checks the name

    pre = preprocess(dataset, members)
    model, inputs, result = _train_population(study, members, pre, over)
    val_predictions = predict_rows(model, inputs, pre, members, "val", study.loss, dataset)
    train_s = result.train_s
    tested_members, tested_pre, tested_model, tested_inputs = members, pre, model, inputs
    if cfg.eval.refit:
        # Selection is over: retrain each member on train + val for its selected number of epochs.
        tested_members = [dataclasses.replace(m, train=np.union1d(m.train, m.val), val=m.val[:0]) for m in members]
        tested_pre = preprocess(dataset, tested_members)
        budget = np.maximum(result.best_epoch + 1, 1)
        tested_model, tested_inputs, refit = _train_population(study, tested_members, tested_pre,
                                                               over + ", refit on train+val", budget)
        train_s += refit.train_s
    predictions = predict_rows(tested_model, tested_inputs, tested_pre, tested_members, "test", study.loss, dataset)

    # Everything trained goes to disk before scoring starts: a scoring failure never loses the training.
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = dataset.rows
    predictions.assign(row=rows[predictions["row"].to_numpy()]).to_csv(run_dir / "predictions.csv", index=False)
    history = artifacts.history_frame(result.history, [m.index for m in members])  # selection's history
    history.to_csv(run_dir / "metrics.csv", index=False)
    selection_split = members if cfg.eval.refit else None
    artifacts.write_json(run_dir / "split_indices.json", artifacts.split_records(tested_members, rows, selection_split))
    _save_checkpoints(run_dir, study, tested_model, result, pre, tested_pre)
    artifacts.write_tensorboard(run_dir / "tensorboard", history)

    results = {
        "task": task,
        "dataset": dataset.name,
        "model": cfg.model.name,
        "members": len(members),
        "plan": over,
        "parameters_per_member": model.parameters_per_member(),
        **_scores(cfg, dataset, tested_pre, tested_members, predictions, val_predictions),
        "selection": {"metric": selection, "higher_is_better": higher},
        "epochs": {"mean_trained": float(result.epochs_run.mean()), "mean_best": float(result.best_epoch.mean() + 1)},
    }
    if hasattr(tested_model, "gates"):
        results["experts"] = expert_usage(tested_model, tested_inputs, [m.test for m in tested_members])
        if results["experts"]["max_share"] > 0.95:
            console.print(f"[yellow]warning:[/] one expert takes {results['experts']['max_share']:.0%} of the gate "
                          "mass on a member's test rows (collapse: try loss.moe=per_expert or loss.balance=0.01)")
    results["timing"] = {"train_s": round(train_s, 3), "total_s": round(time.perf_counter() - start, 3)}
    write_reports(run_dir, results, history)

    console.print(results_table(results))
    console.print(f"run directory: [bold]{run_dir}[/]")
    return results


def _scores(cfg: Config, dataset: Dataset, pre: Preprocessed, tested_members, predictions, val_predictions) -> dict:
    """results.json's over, metrics, baselines, validation scores and confusion matrix, from the predictions."""
    task, classes = dataset.task, dataset.classes
    pooled = name_of(cfg.eval.name) == "loo"  # one test row per member: score each seed's pooled predictions
    baselines = {"majority": majority_predictions(dataset.y, tested_members, task, classes, constant=pooled)}
    for name in cfg.eval.baselines:
        baselines[name] = sklearn_predictions(name, pre, dataset.y, tested_members, task, classes)
    summary = summarize(_pool(predictions, pooled), task, classes, {k: _pool(v, pooled) for k, v in baselines.items()})
    validation = {}
    if len(val_predictions):
        validation = summarize_table(_pool(val_predictions, pooled), task, classes, rows_word="validation rows")
    return {
        **summary,
        "validation": {k.replace("test/", "val/", 1): v for k, v in validation.items()},
        **({"confusion": _confusion(predictions, classes)} if classes else {}),
    }


def _train_population(study: Study, members, pre: Preprocessed, over: str, epoch_budget: np.ndarray | None = None
                      ) -> tuple[Population, MemberInputs, FitResult]:
    """Build, initialize and train one population; the model ends with the weights it keeps."""
    cfg, dataset = study.cfg, study.dataset
    model, data = population(study, members, pre)
    E = len(members)
    shape = "x".join(map(str, study.input_shape))
    console.print(
        f"[bold]{dataset.name}[/]: {len(dataset.y)} rows, {shape} {'inputs' if dataset.images is not None else 'features'}, "
        f"{dataset.task} · [bold]{cfg.model.name}[/]: {model.parameters_per_member():,} parameters per member · "
        f"{E} member{'s' * (E > 1)} ({over}) on {study.device}"
    )
    with epoch_progress(cfg.trainer.epochs, E, cfg.trainer.progress) as on_epoch:
        result = fit(model, data, cfg, study.loss, on_epoch, epoch_budget)
    keep_best = cfg.trainer.early_stopping.restore_best and epoch_budget is None
    with torch.no_grad():
        model.flat.copy_(result.best if keep_best else result.last)
        model.stats.copy_(result.best_stats if keep_best else result.last_stats)
    return model, data.inputs, result


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
    return predictions.assign(member=predictions["seed"])


def _save_checkpoints(run_dir: Path, study: Study, model: Population, result: FitResult, pre: Preprocessed,
                      tested_pre: Preprocessed) -> None:
    """best.pt and last.pt (and refit.pt): weights, the model spec, input shape, classes and fitted preprocessing."""
    cfg = study.cfg
    info = [m.coordinates() for m in study.members]
    spec = {f.name: _plain(getattr(cfg.model, f.name)) for f in dataclasses.fields(cfg.model)}
    extra = {"model": cfg.model.name, "model_config": spec, "input_shape": list(study.input_shape),
             "features": pre.names, "classes": study.dataset.classes, "loss": study.loss}
    folder = run_dir / "checkpoints"
    save_checkpoint(folder / "best.pt", result.best, result.best_stats, model, info, extra, pre.arrays())
    save_checkpoint(folder / "last.pt", result.last, result.last_stats, model, info, extra, pre.arrays())
    if cfg.eval.refit:
        save_checkpoint(folder / "refit.pt", model.flat, model.stats, model, info, extra, tested_pre.arrays())


def _plain(value):
    """A config value as plain data (enums as their strings), loadable with weights_only=True."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else name_of(value) if hasattr(
        value, "value") else value


def _check_monitor(monitor: str, task: str) -> None:
    allowed = ["val/loss", "val/rmse" if task == "regression" else "val/accuracy"]
    if monitor not in allowed:
        raise RunnerError(
            f"trainer.early_stopping.monitor={monitor} does not apply to a {task} target; use one of: {', '.join(allowed)}"
        )
