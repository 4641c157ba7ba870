"""Evaluation from predictions tables: metrics (sklearn), intervals, baselines, reports and plots."""
