"""The seeded splits equal scikit-learn's, draw for draw, over sizes, seeds and class layouts."""

import numpy as np
import pytest
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from runner.data.shuffles import (
    kfold_test_sets, shuffle_split, stratified_kfold_test_sets, stratified_shuffle_split,
)


def layouts():
    """(strata, seed): balanced, skewed, many-class, string labels, and tied class counts."""
    rng = np.random.default_rng(0)
    yield np.arange(303) % 2, 0
    yield (rng.uniform(size=97) < 0.2).astype(int), 3
    yield rng.integers(0, 7, 250), 11
    yield np.array(list("cabbacbcaabbcc" * 5)), 5
    yield np.repeat([2, 0, 1], [10, 10, 10]), 42  # tied counts: sklearn breaks the ties with the rng


@pytest.mark.parametrize("strata, seed", list(layouts()))
def test_stratified_shuffle_split_equals_train_test_split(strata, seed):
    rows = np.arange(len(strata))
    for n_test in (len(np.unique(strata)), len(strata) // 5, len(strata) // 2 + 1):
        want_train, want_test = train_test_split(rows, test_size=n_test, random_state=seed, stratify=strata)
        train, test = stratified_shuffle_split(strata, n_test, seed)
        assert train.tolist() == want_train.tolist() and test.tolist() == want_test.tolist()


@pytest.mark.parametrize("n, n_test, seed", [(10, 3, 0), (303, 61, 0), (97, 40, 7), (2, 1, 123)])
def test_shuffle_split_equals_train_test_split(n, n_test, seed):
    want_train, want_test = train_test_split(np.arange(n), test_size=n_test, random_state=seed)
    train, test = shuffle_split(n, n_test, seed)
    assert train.tolist() == want_train.tolist() and test.tolist() == want_test.tolist()


@pytest.mark.parametrize("strata, seed", list(layouts()))
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_kfolds_equal_sklearns(strata, seed, k):
    rows = np.arange(len(strata))
    if np.bincount(np.unique(strata, return_inverse=True)[1]).min() >= k:
        want = [test for _, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, strata)]
        assert [t.tolist() for t in stratified_kfold_test_sets(strata, k, seed)] == [t.tolist() for t in want]
    want = [test for _, test in KFold(k, shuffle=True, random_state=seed).split(rows)]
    assert [t.tolist() for t in kfold_test_sets(len(rows), k, seed)] == [t.tolist() for t in want]


def test_too_few_rows_of_a_class_is_a_value_error_as_in_sklearn():
    with pytest.raises(ValueError, match="only 1 member"):
        stratified_shuffle_split(np.array([0, 0, 1]), 1, 0)
    with pytest.raises(ValueError, match="test_size = 2 should be greater or equal to the number of classes = 3"):
        stratified_shuffle_split(np.repeat([0, 1, 2], 4), 2, 0)
