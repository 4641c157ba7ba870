"""Evaluation from predictions tables: metrics (sklearn), intervals, baselines, reports and plots."""

from runner.evaluate.baselines import majority_predictions, sklearn_predictions
from runner.evaluate.metrics import (
    confusion,
    default_metric,
    higher_is_better,
    metric_names,
    per_example,
    score,
    score_members,
)
from runner.evaluate.report import report_csv, report_frame, report_markdown, results_table, write_reports
from runner.evaluate.stats import fmt_interval, mean_ci, nadeau_bengio_se, per_example_ci
from runner.evaluate.summary import summarize

__all__ = [
    "confusion", "default_metric", "fmt_interval", "higher_is_better", "majority_predictions", "mean_ci",
    "metric_names", "nadeau_bengio_se", "per_example", "per_example_ci", "report_csv", "report_frame",
    "report_markdown", "results_table", "score", "score_members", "sklearn_predictions", "summarize",
    "write_reports",
]
