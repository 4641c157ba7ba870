"""Seeded row splits, drawn exactly as scikit-learn draws them, without importing scikit-learn.

Importing sklearn (with the scipy.stats it loads) took ~0.65 s, half of `import torch`, in every run
whose only use of it was these splits. Each function repeats the draws of the sklearn splitter it is
named after, call for call on the same `np.random.RandomState(seed)`, so a run splits its rows as it
did with sklearn; tests/test_shuffles.py checks equality with sklearn over many sizes and seeds.
"""

import numpy as np


def shuffle_split(n: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions as sklearn's train_test_split(range(n), test_size=n_test, random_state=seed)."""
    permutation = np.random.RandomState(seed).permutation(n)
    return permutation[n_test:], permutation[:n_test]


def stratified_shuffle_split(strata: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions as train_test_split(..., stratify=strata); ValueError where sklearn raises one."""
    classes, y_indices, class_counts = np.unique(strata, return_inverse=True, return_counts=True)
    n_train = len(strata) - n_test
    if class_counts.min() < 2:
        raise ValueError(f"The least populated classes in y have only 1 member, which is too few "
                         f"(classes: {classes[class_counts < 2].tolist()})")
    if n_train < len(classes):
        raise ValueError(f"The train_size = {n_train} should be greater or equal to the number of classes = "
                         f"{len(classes)}")
    if n_test < len(classes):
        raise ValueError(f"The test_size = {n_test} should be greater or equal to the number of classes = "
                         f"{len(classes)}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        rows = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(rows[: n_i[i]])
        test.extend(rows[n_i[i]: n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """sklearn's approximate mode of the multivariate hypergeometric: per-class draws, ties broken by `rng`."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def kfold_test_sets(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Each fold's sorted test positions, as sklearn's KFold(k, shuffle=True, random_state=seed)."""
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    bounds = np.r_[0, np.cumsum(sizes)]
    return [np.sort(indices[bounds[i]: bounds[i + 1]]) for i in range(k)]


def stratified_kfold_test_sets(strata: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Each fold's sorted test positions, as sklearn's StratifiedKFold(k, shuffle=True, random_state=seed)."""
    rng = np.random.RandomState(seed)
    _, first, inverse = np.unique(strata, return_index=True, return_inverse=True)
    _, by_appearance = np.unique(first, return_inverse=True)  # class codes in order of first appearance
    codes = by_appearance[inverse]
    n_classes = len(first)
    order = np.sort(codes)
    # Round robin over the sorted codes gives each fold its count of each class.
    allocation = np.asarray([np.bincount(order[i::k], minlength=n_classes) for i in range(k)])
    test_folds = np.empty(len(strata), dtype="i")
    for c in range(n_classes):
        folds_for_class = np.arange(k).repeat(allocation[:, c])
        rng.shuffle(folds_for_class)
        test_folds[codes == c] = folds_for_class
    return [np.flatnonzero(test_folds == i) for i in range(k)]
