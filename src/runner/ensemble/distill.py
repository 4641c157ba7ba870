"""Distillation: one student per split trained on its ensemble's (softened) probabilities over the training rows."""

import dataclasses

import numpy as np
import pandas as pd

from runner.data.preprocess import preprocess
from runner.engine.predict import member_outputs, predict_rows, seconds_per_row
from runner.fit import Fitted, fit_population


def teacher_targets(proba: np.ndarray, y: np.ndarray, loss: str, temperature: float, alpha: float) -> np.ndarray:
    """Student targets from a teacher's outputs [n, K] (regression: standardized values [n, 1]):
    (1 - alpha)·softmax(log p / T) + alpha·one-hot(y); bce keeps the positive class's share, mse the values."""
    if loss == "mse":
        return (1 - alpha) * proba[:, 0] + alpha * y
    soft = np.exp(np.log(np.clip(proba, 1e-12, 1)) / temperature)
    soft /= soft.sum(1, keepdims=True)
    mixed = (1 - alpha) * soft + alpha * np.eye(proba.shape[1])[y.astype(int)]
    return mixed[:, 1] if loss == "bce" else mixed


def distill(study, selected: Fitted) -> tuple[pd.DataFrame, dict]:
    """Train each split's student on its ensemble's targets (the members of `selected`); return its test
    predictions and what it costs (parameters, inference seconds per row)."""
    model, inputs, pre, members = selected.model, selected.inputs, selected.pre, selected.members
    cfg, dataset, en = study.cfg, study.dataset, study.cfg.ensemble
    n = len(dataset.y)
    everything = [np.arange(n)] * len(members)
    teachers = member_outputs(model, inputs, everything, study.loss)  # [E, n, K], standardized for regression
    splits: dict[tuple, list[int]] = {}
    for e, m in enumerate(members):
        splits.setdefault((m.repeat, m.fold), []).append(e)
    students, targets = [], []
    y_std = (dataset.y - pre.y_mean[:, None]) / pre.y_scale[:, None] if dataset.task == "regression" else None
    for i, group in enumerate(splits.values()):
        first = members[group[0]]
        students.append(dataclasses.replace(first, index=i, seed=cfg.trainer.seed, bag=None))
        truth = dataset.y if y_std is None else y_std[group[0]]
        targets.append(teacher_targets(teachers[group].mean(0), truth, study.loss, en.temperature, en.alpha))
    student_study = dataclasses.replace(study, cfg=dataclasses.replace(cfg, model=en.student))
    student_pre = preprocess(dataset, students)
    student = fit_population(student_study, students, student_pre, None, soft_targets=np.stack(targets),
                             keep_best=True)
    table = predict_rows(student.model, student.inputs, student_pre, students, "test", study.loss, dataset)
    cost = {"parameters": student.model.parameters_per_member(),
            "inference_s_per_row": seconds_per_row(student.model, student.inputs, students, study.loss)}
    return table, cost
