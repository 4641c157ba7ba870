"""One experiment end to end: data -> population plan -> features -> engine -> predictions -> report."""

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from runner import artifacts
from runner.config import Config, name_of, validate
from runner.console import console, epoch_progress
from runner.data.datasets import Dataset, load_dataset
from runner.data.preprocess import Features, member_features
from runner.data.splits import describe_plan, population_plan
from runner.engine import losses
from runner.engine.checkpoint import save_checkpoint
from runner.engine.device import configure_threads, resolve_device
from runner.engine.loop import FitResult, PopulationData, fit
from runner.engine.predict import predict_rows
from runner.errors import RunnerError
from runner.evaluate.baselines import majority_predictions, sklearn_predictions
from runner.evaluate.metrics import confusion, default_metric, higher_is_better
from runner.evaluate.report import results_table, write_reports
from runner.evaluate.summary import summarize, summarize_table
from runner.models import Population, build_model


def train(cfg: Config, run_dir: str | Path) -> dict:
    """Train the configured population, write the run directory and return results.json's dict."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    validate(cfg)
    dataset = load_dataset(cfg.dataset)
    task = dataset.task
    loss = losses.resolve_loss(name_of(cfg.loss.name), task)
    _check_monitor(cfg.trainer.early_stopping.monitor, task)
    selection = cfg.eval.metric or default_metric(task)
    higher = higher_is_better(selection)  # also checks the name
    seeds = [cfg.trainer.seed + i for i in range(cfg.trainer.seeds)]
    members = population_plan(dataset.y, task, cfg.eval, seeds)
    over = describe_plan(members, cfg.eval)
    device = resolve_device(name_of(cfg.trainer.device))

    feats = member_features(dataset, members)
    model, result = _train_population(cfg, dataset, feats, members, loss, device, over)
    val_predictions = predict_rows(model, feats, members, "val", loss, dataset)
    train_s = result.train_s
    tested_members, tested_feats, tested_model = members, feats, model
    if cfg.eval.refit:
        # Selection is over: retrain each member on train + val for its selected number of epochs.
        tested_members = [dataclasses.replace(m, train=np.union1d(m.train, m.val), val=m.val[:0]) for m in members]
        tested_feats = member_features(dataset, tested_members)
        budget = np.maximum(result.best_epoch + 1, 1)
        tested_model, refit = _train_population(cfg, dataset, tested_feats, tested_members, loss, device,
                                                over + ", refit on train+val", budget)
        train_s += refit.train_s
    predictions = predict_rows(tested_model, tested_feats, tested_members, "test", loss, dataset)

    # Everything trained goes to disk before scoring starts: a scoring failure never loses the training.
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = dataset.features.index.to_numpy()
    predictions.assign(row=rows[predictions["row"].to_numpy()]).to_csv(run_dir / "predictions.csv", index=False)
    history = artifacts.history_frame(result.history, [m.index for m in members])  # selection's history
    history.to_csv(run_dir / "metrics.csv", index=False)
    selection_split = members if cfg.eval.refit else None
    artifacts.write_json(run_dir / "split_indices.json", artifacts.split_records(tested_members, rows, selection_split))
    _save_checkpoints(run_dir, cfg, tested_model, result, members, feats, dataset)
    artifacts.write_tensorboard(run_dir / "tensorboard", history)

    results = {
        "task": task,
        "dataset": dataset.name,
        "model": cfg.model.name,
        "members": len(members),
        "plan": over,
        "parameters_per_member": model.parameters_per_member(),
        **_scores(cfg, dataset, tested_feats, tested_members, predictions, val_predictions),
        "selection": {"metric": selection, "higher_is_better": higher},
        "epochs": {"mean_trained": float(result.epochs_run.mean()), "mean_best": float(result.best_epoch.mean() + 1)},
    }
    results["timing"] = {"train_s": round(train_s, 3), "total_s": round(time.perf_counter() - start, 3)}
    write_reports(run_dir, results, history)

    console.print(results_table(results))
    console.print(f"run directory: [bold]{run_dir}[/]")
    return results


def _scores(cfg: Config, dataset: Dataset, feats: Features, tested_members, predictions, val_predictions) -> dict:
    """results.json's over, metrics, baselines, validation scores and confusion matrix, from the predictions."""
    task, classes = dataset.task, dataset.classes
    pooled = name_of(cfg.eval.name) == "loo"  # one test row per member: score each seed's pooled predictions
    baselines = {"majority": majority_predictions(dataset.y, tested_members, task, classes, constant=pooled)}
    for name in cfg.eval.baselines:
        baselines[name] = sklearn_predictions(name, feats.X, dataset.y, tested_members, task, classes)
    summary = summarize(_pool(predictions, pooled), task, classes, {k: _pool(v, pooled) for k, v in baselines.items()})
    validation = {}
    if len(val_predictions):
        validation = summarize_table(_pool(val_predictions, pooled), task, classes, rows_word="validation rows")
    return {
        **summary,
        "validation": {k.replace("test/", "val/", 1): v for k, v in validation.items()},
        **({"confusion": _confusion(predictions, classes)} if classes else {}),
    }


def _train_population(cfg: Config, dataset: Dataset, feats: Features, members, loss: str, device, over: str,
                      epoch_budget: np.ndarray | None = None) -> tuple[Population, FitResult]:
    """Build, initialize and train one population; the model ends with the weights it keeps."""
    E, n, d = feats.X.shape
    model = build_model(cfg.model, E, d, losses.output_size(loss, len(dataset.classes))).to(device)
    model.initialize([m.seed for m in members], name_of(cfg.model.init))
    batch = max(len(m.train) for m in members) if cfg.trainer.batch_size == "full" else cfg.trainer.batch_size
    configure_threads(cfg.trainer.threads, device, E * model.parameters_per_member() * batch)
    console.print(
        f"[bold]{dataset.name}[/]: {n} rows, {d} features, {dataset.task} · [bold]{cfg.model.name}[/]: "
        f"{model.parameters_per_member():,} parameters per member · {E} member{'s' * (E > 1)} ({over}) on {device}"
    )
    data = PopulationData(
        X=torch.from_numpy(feats.X).to(device), y=torch.from_numpy(feats.y).to(device),
        train=[m.train for m in members], val=[m.val for m in members], seeds=[m.seed for m in members],
        y_scale=torch.from_numpy(feats.y_scale.astype(np.float32)).to(device),
        weight=row_weights(cfg, dataset, E, device),
    )
    torch.manual_seed(cfg.trainer.seed)  # dropout masks: the one draw shared by all members
    with epoch_progress(cfg.trainer.epochs, E, cfg.trainer.progress) as on_epoch:
        result = fit(model, data, cfg, loss, on_epoch, epoch_budget)
    keep_best = cfg.trainer.early_stopping.restore_best and epoch_budget is None
    with torch.no_grad():
        model.flat.copy_(result.best if keep_best else result.last)
        model.stats.copy_(result.best_stats if keep_best else result.last_stats)
    return model, result


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


def _save_checkpoints(run_dir: Path, cfg: Config, model: Population, result: FitResult, members, feats, dataset):
    info = [{"member": m.index, "fold": m.fold, "repeat": m.repeat, "seed": m.seed} for m in members]
    extra = {"model": cfg.model.name, "features": feats.names, "classes": dataset.classes}
    folder = run_dir / "checkpoints"
    save_checkpoint(folder / "best.pt", result.best, result.best_stats, model, info, extra)
    save_checkpoint(folder / "last.pt", result.last, result.last_stats, model, info, extra)
    if cfg.eval.refit:
        save_checkpoint(folder / "refit.pt", model.flat, model.stats, model, info, extra)


def row_weights(cfg: Config, dataset: Dataset, members: int, device) -> torch.Tensor | None:
    """[E, n] training weights per row: loss.class_weights of its class times its sample weight."""
    if dataset.weights is None and cfg.loss.class_weights is None:
        return None
    w = np.ones(len(dataset.y)) if dataset.weights is None else dataset.weights.copy()
    if cfg.loss.class_weights is not None:
        k = len(dataset.classes)
        if k == 0 or len(cfg.loss.class_weights) != k:
            raise RunnerError(f"loss.class_weights has {len(cfg.loss.class_weights)} values; this {dataset.task} "
                              f"target needs one per class ({k}: {', '.join(dataset.classes) or 'none'})")
        w = w * np.asarray(cfg.loss.class_weights, dtype=float)[dataset.y]
    return torch.from_numpy(np.tile(w.astype(np.float32), (members, 1))).to(device)


def _check_monitor(monitor: str, task: str) -> None:
    allowed = ["val/loss", "val/rmse" if task == "regression" else "val/accuracy"]
    if monitor not in allowed:
        raise RunnerError(
            f"trainer.early_stopping.monitor={monitor} does not apply to a {task} target; use one of: {', '.join(allowed)}"
        )
