"""Scoring every weight averaging of a fit on validation and test, beside the restored-best model."""

from runner.engine.loop import FitResult
from runner.engine.predict import predict_rows
from runner.evaluate.headline import summarize_table


def score_averages(model, inputs, pre, members, result: FitResult, loss: str, dataset, kept: list[int]) -> dict:
    """results.json's "averaging": for the restored-best weights and each averaging, the test and validation
    metrics (mean ± interval over the members in `kept`, diverged members left out) and each member's epochs.

    The model's weights are put back as they were.
    """
    if not result.averages:
        return {}
    saved = model.flat.detach().clone(), model.stats.clone()
    entries = {"restored_best": (result.best, result.best_stats,
                                 [[int(e)] for e in result.best_epoch])}
    entries.update({name: (a.flat, a.stats, a.epochs) for name, a in result.averages.items()})
    task, classes = dataset.task, dataset.classes
    out = {}
    for name, (flat, stats, epochs) in entries.items():
        model.load_weights(flat, stats)
        scores = {}
        for part in ("test", "val"):
            table = predict_rows(model, inputs, pre, members, part, loss, dataset)
            table = table[table["member"].isin(kept)]
            if len(table):
                summary = summarize_table(table, task, classes, rows_word="validation rows" if part == "val"
                                          else "test rows")
                scores[part] = {k.replace("test/", f"{part}/", 1): v for k, v in summary.items()}
        out[name] = {**scores, "epochs": {str(m.index): epochs[i] for i, m in enumerate(members) if m.index in kept}}
    model.load_weights(*saved)
    return out
