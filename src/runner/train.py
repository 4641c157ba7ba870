"""One experiment end to end: data -> population plan -> features -> engine -> predictions -> report."""

import time
from pathlib import Path

import numpy as np
import torch

from runner import artifacts
from runner.config import Config, name_of, validate
from runner.console import console, epoch_progress
from runner.data.datasets import load_dataset
from runner.data.preprocess import member_features
from runner.data.splits import describe_plan, population_plan
from runner.engine import losses
from runner.engine.checkpoint import save_checkpoint
from runner.engine.device import resolve_device
from runner.engine.loop import PopulationData, fit
from runner.engine.predict import predict_test
from runner.errors import RunnerError
from runner.evaluate.baselines import majority_predictions
from runner.evaluate.report import results_table, write_reports
from runner.evaluate.summary import summarize
from runner.models import build_model


def train(cfg: Config, run_dir: str | Path) -> dict:
    """Train the configured population, write the run directory and return results.json's dict."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    validate(cfg)
    dataset = load_dataset(cfg.dataset)
    task = dataset.task
    loss = losses.resolve_loss(name_of(cfg.loss.name), task)
    _check_monitor(cfg.trainer.early_stopping.monitor, task)
    seeds = [cfg.trainer.seed + i for i in range(cfg.trainer.seeds)]
    members = population_plan(dataset.y, task, cfg.eval, seeds)
    over = describe_plan(members, cfg.eval)
    feats = member_features(dataset, members)

    device = resolve_device(name_of(cfg.trainer.device))
    E, n, d = feats.X.shape
    model = build_model(cfg.model, E, d, losses.output_size(loss, len(dataset.classes))).to(device)
    model.initialize([m.seed for m in members], name_of(cfg.model.init))
    console.print(
        f"[bold]{dataset.name}[/]: {n} rows, {d} features, {task} · [bold]{cfg.model.name}[/]: "
        f"{model.parameters_per_member():,} parameters per member · {E} member{'s' * (E > 1)} ({over}) on {device}"
    )
    y = torch.from_numpy(feats.y).to(device)
    data = PopulationData(
        X=torch.from_numpy(feats.X).to(device), y=y,
        train=[m.train for m in members], val=[m.val for m in members], seeds=[m.seed for m in members],
        y_scale=torch.from_numpy(feats.y_scale.astype(np.float32)).to(device),
        weight=_row_weights(cfg, dataset, E, device),
    )
    with epoch_progress(cfg.trainer.epochs, E, cfg.trainer.progress) as on_epoch:
        result = fit(model, data, cfg, loss, on_epoch)

    restore = cfg.trainer.early_stopping.restore_best
    with torch.no_grad():
        model.flat.copy_(result.best if restore else result.last)
        model.stats.copy_(result.best_stats if restore else result.last_stats)
    predictions = predict_test(model, data.X, members, loss, dataset.classes, dataset.y, feats.y_mean, feats.y_scale)
    baselines = {"majority": majority_predictions(dataset.y, members, task, dataset.classes)}
    results = {
        "task": task,
        "dataset": dataset.name,
        "model": cfg.model.name,
        "members": E,
        "parameters_per_member": model.parameters_per_member(),
        **summarize(predictions, task, dataset.classes, members, over, baselines),
        "epochs": {"mean_trained": float(result.epochs_run.mean()), "mean_best": float(result.best_epoch.mean())},
    }

    run_dir.mkdir(parents=True, exist_ok=True)
    rows = dataset.features.index.to_numpy()
    predictions["row"] = rows[predictions["row"].to_numpy()]
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    history = artifacts.history_frame(result.history, [m.index for m in members])
    history.to_csv(run_dir / "metrics.csv", index=False)
    artifacts.write_json(run_dir / "split_indices.json", artifacts.split_records(members, rows))
    member_info = [{"member": m.index, "fold": m.fold, "repeat": m.repeat, "seed": m.seed} for m in members]
    extra = {"model": cfg.model.name, "features": feats.names, "classes": dataset.classes}
    save_checkpoint(run_dir / "checkpoints" / "best.pt", result.best, result.best_stats, model, member_info, extra)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", result.last, result.last_stats, model, member_info, extra)
    artifacts.write_tensorboard(run_dir / "tensorboard", history)
    results["timing"] = {"train_s": round(result.train_s, 3), "total_s": round(time.perf_counter() - start, 3)}
    write_reports(run_dir, results, history)

    console.print(results_table(results))
    console.print(f"run directory: [bold]{run_dir}[/]")
    return results


def _row_weights(cfg: Config, dataset, members: int, device) -> torch.Tensor | None:
    """[E, n] training weights per row: loss.class_weights of its class times its sample weight."""
    w = np.ones(len(dataset.y)) if dataset.weights is None else dataset.weights.copy()
    if cfg.loss.class_weights is not None:
        k = len(dataset.classes)
        if k == 0 or len(cfg.loss.class_weights) != k:
            raise RunnerError(f"loss.class_weights has {len(cfg.loss.class_weights)} values; this {dataset.task} "
                              f"target needs one per class ({k}: {', '.join(dataset.classes) or 'none'})")
        w = w * np.asarray(cfg.loss.class_weights, dtype=float)[dataset.y]
    if dataset.weights is None and cfg.loss.class_weights is None:
        return None
    return torch.from_numpy(np.tile(w.astype(np.float32), (members, 1))).to(device)


def _check_monitor(monitor: str, task: str) -> None:
    allowed = ["val/loss", "val/rmse" if task == "regression" else "val/accuracy"]
    if monitor not in allowed:
        raise RunnerError(
            f"trainer.early_stopping.monitor={monitor} does not apply to a {task} target; use one of: {', '.join(allowed)}"
        )
