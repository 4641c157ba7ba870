"""The population plan: disjoint, covering, stratified splits in the documented member order."""

import math

import numpy as np
import pytest
from sklearn.model_selection import KFold, StratifiedKFold

from runner.data import describe_plan, population_plan
from runner.errors import RunnerError

SEEDS = [11, 12, 13]


def assert_partition(member, n):
    parts = [member.train, member.val, member.test]
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)  # sorted, no repeats
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))  # disjoint and covering


def assert_stratified(part, y):
    # The part's positives are within one row of what the overall ratio predicts.
    assert abs(y[part].sum() - len(part) * y.mean()) <= 1


def test_holdout_heart(heart, eval_cfg):
    y, n = heart.y, len(heart.y)
    members = population_plan(y, heart.task, eval_cfg("holdout"), SEEDS)
    assert [(m.index, m.fold, m.repeat, m.seed) for m in members] == [(0, 0, 0, 11), (1, 0, 0, 12), (2, 0, 0, 13)]
    first = members[0]
    assert_partition(first, n)
    assert [len(first.train), len(first.val), len(first.test)] == [181, 61, 61]
    for size, fraction in zip(map(len, (first.train, first.val, first.test)), (0.6, 0.2, 0.2)):
        assert abs(size - fraction * n) <= 1
    for part in (first.train, first.val, first.test):
        assert_stratified(part, y)
    for other in members[1:]:  # every seed shares the split
        assert all(np.array_equal(getattr(first, p), getattr(other, p)) for p in ("train", "val", "test"))
    again = population_plan(y, heart.task, eval_cfg("holdout"), [0])[0]
    moved = population_plan(y, heart.task, eval_cfg("holdout", split_seed=1), [0])[0]
    assert np.array_equal(again.test, first.test) and not np.array_equal(moved.test, first.test)
    assert describe_plan(members, eval_cfg("holdout")) == "3 seeds"
    assert describe_plan(members[:1], eval_cfg("holdout")) == "1 model"


def test_holdout_without_validation_rows(heart, eval_cfg):
    member = population_plan(heart.y, heart.task, eval_cfg("holdout", val_fraction=0.0), [0])[0]
    assert len(member.val) == 0 and len(member.test) == 61 and len(member.train) == 242


def test_kfold_heart(heart, eval_cfg):
    y, n, k, repeats = heart.y, len(heart.y), 10, 3
    cfg = eval_cfg("kfold", k=k, repeats=repeats, split_seed=4)
    members = population_plan(y, heart.task, cfg, SEEDS)
    assert len(members) == repeats * k * len(SEEDS)
    assert describe_plan(members, cfg) == "3 repeats x 10 folds x 3 seeds"
    tests_by_repeat = []
    for repeat in range(repeats):
        expected = StratifiedKFold(k, shuffle=True, random_state=4 + repeat).split(np.zeros(n), y)
        tested = np.zeros(n, dtype=int)
        for fold, (_, test) in enumerate(expected):
            for s, seed in enumerate(SEEDS):
                m = members[(repeat * k + fold) * len(SEEDS) + s]
                assert (m.index, m.repeat, m.fold, m.seed) == ((repeat * k + fold) * len(SEEDS) + s, repeat, fold, seed)
                assert_partition(m, n)
                assert np.array_equal(m.test, test)  # sklearn's own folds
                assert len(m.val) == math.ceil(0.2 * (n - len(test)))
                assert_stratified(m.test, y)
                assert_stratified(m.val, y)
            tested[m.test] += 1
        assert tested.tolist() == [1] * n  # each row tested exactly once per repeat
        sizes = [len(members[(repeat * k + f) * len(SEEDS)].test) for f in range(k)]
        assert max(sizes) - min(sizes) <= 1
        tests_by_repeat.append(members[repeat * k * len(SEEDS)].test)
    assert not np.array_equal(tests_by_repeat[0], tests_by_repeat[1])  # repeats reshuffle


def test_kfold_regression_uses_plain_kfold(eval_cfg):
    y = np.linspace(0, 1, 23)
    members = population_plan(y, "regression", eval_cfg("kfold", k=4), [0])
    expected = [test for _, test in KFold(4, shuffle=True, random_state=0).split(y)]
    assert all(np.array_equal(m.test, t) for m, t in zip(members, expected))
    assert describe_plan(members, eval_cfg("kfold", k=4)) == "4 folds"


def test_loo(heart, eval_cfg):
    y, n = heart.y[:40], 40
    members = population_plan(y, heart.task, eval_cfg("loo"), [0, 1])
    assert len(members) == 2 * n
    assert [m.test.tolist() for m in members[::2]] == [[i] for i in range(n)]
    for m in members:
        assert_partition(m, n)
        assert len(m.val) == math.ceil(0.2 * (n - 1))
    assert describe_plan(members, eval_cfg("loo")) == "40 leave-one-out folds x 2 seeds"


def _errors(eval_cfg):
    y7 = np.array([0, 1] * 3 + [1])
    unbalanced = np.array([0] * 20 + [1] * 3)
    return [
        (y7, "binary", eval_cfg("kfold", k=1), "eval.k=1 is not valid: k-fold needs k >= 2"),
        (y7, "binary", eval_cfg("kfold", k=10), "eval.k=10 needs at least 10 rows; the data has 7"),
        (unbalanced, "binary", eval_cfg("kfold", k=5), "class 1 has 3 rows; stratified 5-fold needs at least "
         "5 rows per class (lower eval.k or set eval.stratify=false)"),
        (np.arange(10) % 5, "multiclass", eval_cfg("holdout"), "eval.test_fraction=0.2 cannot stratify 10 rows"),
        (y7, "binary", eval_cfg("kfold", k=2, repeats=0), "eval.repeats=0 is not valid"),
        (y7, "binary", eval_cfg("loo", repeats=2), "eval.repeats=2 with eval=loo"),
        (np.array([0, 1] * 4 + [2]), "multiclass", eval_cfg("holdout"), "class 2 has 1 row; a stratified holdout"),
        (np.zeros(10), "regression", eval_cfg("holdout", test_fraction=0.45, val_fraction=0.5),
         "leave no training rows of 10"),
        (np.zeros(2), "regression", eval_cfg("kfold", k=2, val_fraction=0.5), "leaves no training rows in fold 0"),
    ]


def test_split_errors_are_one_line_runner_errors(eval_cfg):
    for y, task, cfg, expected in _errors(eval_cfg):
        with pytest.raises(RunnerError) as info:
            population_plan(y, task, cfg, [0])
        assert expected in str(info.value) and "\n" not in str(info.value), (expected, str(info.value))


def test_unstratified_split_ignores_small_classes(eval_cfg):
    y = np.array([0] * 20 + [1] * 3)
    members = population_plan(y, "binary", eval_cfg("kfold", k=5, stratify=False), [0])
    assert sorted(np.concatenate([m.test for m in members]).tolist()) == list(range(23))
