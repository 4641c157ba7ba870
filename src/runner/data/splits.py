"""The population plan: which rows each member (fold x repeat x seed) trains, validates and tests on."""

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from runner.config.schema import EvalConfig, EvalName
from runner.data.shuffles import (
    kfold_test_sets,
    shuffle_split,
    stratified_kfold_test_sets,
    stratified_shuffle_split,
)
from runner.errors import RunnerError


@dataclass(frozen=True)
class Member:
    """One model of the population: its place in the plan (fold, repeat, seed, bag) and its rows (positions 0..n-1)."""

    index: int
    fold: int
    repeat: int
    seed: int
    train: np.ndarray  # int64 positions (sorted; a bag's bootstrap repeats rows); disjoint from val and test
    val: np.ndarray
    test: np.ndarray
    bag: int | None = None  # ensemble.bagging: which bootstrap resample of the fold's training rows
    inner: int | None = None  # stacking: the inner fold within the outer split (fold, repeat)
    oof: np.ndarray | None = None  # stacking: the outer training rows this inner member holds out

    def coordinates(self) -> dict:
        """The member's place in the plan, as every file that lists members writes it."""
        out = {"member": self.index, "fold": self.fold, "repeat": self.repeat, "seed": self.seed}
        extra = {"bag": self.bag, "inner": self.inner}
        return {**out, **{k: v for k, v in extra.items() if v is not None}}


def population_plan(y: np.ndarray, task: str, cfg: EvalConfig, seeds: list[int], bags: int = 0) -> list[Member]:
    """One Member per (repeat, fold, seed[, bag]), ordered by split, then seed, then bag.

    With `bags`, each seed trains `bags` members, each on a bootstrap resample of the split's training rows
    (same size, with replacement; the resample depends on the split and the bag, not on the seed).
    """
    y = np.asarray(y)
    strata = y if task != "regression" and cfg.stratify else None
    method = EvalName(cfg.name).value
    if method == "holdout":
        splits = [(0, 0, *_holdout(y, strata, cfg))]
    else:
        splits = []
        for repeat, fold, rest, test in _folds(y, strata, cfg, method):
            train, val = _carve(rest, strata, cfg.val_fraction, cfg.split_seed + repeat)
            splits.append((repeat, fold, train, val, test))
    members = []
    for repeat, fold, *rows in splits:
        train, val, test = (np.sort(r).astype(np.int64) for r in rows)
        _need(len(train) > 0, f"eval.val_fraction={cfg.val_fraction} leaves no training rows in fold {fold} "
              f"of {len(y)} rows (lower eval.val_fraction)")
        # Every seed shares its split: seeds vary the model (init, shuffling), never the rows.
        if not bags:
            members += [Member(len(members) + s, fold, repeat, seed, train, val, test) for s, seed in enumerate(seeds)]
            continue
        resamples = [np.sort(np.random.default_rng([cfg.split_seed, repeat, fold, bag]).choice(train, len(train)))
                     for bag in range(bags)]
        for seed in seeds:
            members += [Member(len(members) + bag, fold, repeat, seed, rows, val, test, bag)
                        for bag, rows in enumerate(resamples)]
    return members


def inner_plan(outer: list[Member], y: np.ndarray, task: str, cfg: EvalConfig, k: int) -> list[Member]:
    """Nested k-fold: for each outer member, k inner members over its training and validation rows. Inner
    member j trains (and validates) on all of them but inner fold j, which it holds out (`oof`), and is tested
    on the outer member's test rows; every outer training row is held out by exactly one inner member."""
    y = np.asarray(y)
    inner_cfg = SimpleNamespace(k=k, repeats=1, split_seed=cfg.split_seed, stratify=cfg.stratify)
    members = []
    for m in outer:
        rest = np.union1d(m.train, m.val)
        strata = y[rest] if task != "regression" and cfg.stratify else None
        _need(k <= len(rest), f"ensemble.inner_k={k} needs at least {k} training rows per split; "
              f"split {m.fold} has {len(rest)} (lower ensemble.inner_k)")
        for _, j, keep, held in _folds(y[rest], strata, inner_cfg, "kfold"):
            train, val = _carve(rest[keep], None if strata is None else y, cfg.val_fraction, cfg.split_seed + j)
            members.append(Member(len(members), m.fold, m.repeat, m.seed, np.sort(train), np.sort(val), m.test,
                                  m.bag, j, np.sort(rest[held])))
    return members


def describe_plan(members: list[Member], cfg: EvalConfig) -> str:
    """What a ± over these members is over, e.g. "10 folds x 5 seeds", or "1 model"."""
    repeats = len({m.repeat for m in members})
    folds = len({m.fold for m in members})
    bags = len({m.bag for m in members})
    seeds = len(members) // (repeats * folds * bags)
    fold_word = "leave-one-out folds" if EvalName(cfg.name).value == "loo" else "folds"
    parts = [f"{count} {word}" for count, word in ((repeats, "repeats"), (folds, fold_word), (seeds, "seeds"),
                                                   (bags, "bags")) if count > 1]
    return " x ".join(parts) or "1 model"


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise RunnerError(message)


def _holdout(y: np.ndarray, strata: np.ndarray | None, cfg: EvalConfig) -> tuple[np.ndarray, ...]:
    n = len(y)
    # Counts rounded up as sklearn does for fractions; computing them here keeps 60/20/20 of all rows exact.
    n_test, n_val = math.ceil(cfg.test_fraction * n), math.ceil(cfg.val_fraction * n)
    _need(n - n_test - n_val > 0, f"eval.test_fraction={cfg.test_fraction} and eval.val_fraction="
          f"{cfg.val_fraction} leave no training rows of {n} (lower them or use more data)")
    if strata is not None:
        _check_strata(strata, 2, "a stratified holdout split needs at least 2 rows per class",
                      "use eval.stratify=false")
    try:
        rest, test = (shuffle_split(n, n_test, cfg.split_seed) if strata is None
                      else stratified_shuffle_split(strata, n_test, cfg.split_seed))
    except ValueError as err:  # e.g. fewer test rows than classes
        reason = " ".join(str(err).split())
        raise RunnerError(f"eval.test_fraction={cfg.test_fraction} cannot stratify {n} rows: {reason} "
                          "(raise eval.test_fraction or set eval.stratify=false)") from None
    train, val = _carve(rest, strata, n_val, cfg.split_seed)
    return train, val, test


def _folds(y: np.ndarray, strata: np.ndarray | None, cfg: EvalConfig, method: str):
    """Yield (repeat, fold, non-test rows, test rows) for k-fold or leave-one-out."""
    n, rows = len(y), np.arange(len(y))
    if method == "loo":
        # One test row per fold: there is nothing to stratify and nothing to reshuffle.
        _need(cfg.repeats == 1, f"eval.repeats={cfg.repeats} with eval=loo: leave-one-out has one split "
              "(use eval.repeats=1)")
        for fold in range(n):
            yield 0, fold, np.delete(rows, fold), rows[fold:fold + 1]
        return
    k = cfg.k
    _need(k >= 2, f"eval.k={k} is not valid: k-fold needs k >= 2 (or use eval=holdout)")
    _need(k <= n, f"eval.k={k} needs at least {k} rows; the data has {n} (lower eval.k)")
    _need(cfg.repeats >= 1, f"eval.repeats={cfg.repeats} is not valid: use a count >= 1")
    if strata is not None:
        _check_strata(strata, k, f"stratified {k}-fold needs at least {k} rows per class",
                      "lower eval.k or set eval.stratify=false")
    for repeat in range(cfg.repeats):
        seed = cfg.split_seed + repeat
        tests = kfold_test_sets(n, k, seed) if strata is None else stratified_kfold_test_sets(strata, k, seed)
        for fold, test in enumerate(tests):
            yield repeat, fold, np.setdiff1d(rows, test), test


def _carve(rows: np.ndarray, strata: np.ndarray | None, size: float | int, seed: int) -> tuple[np.ndarray, ...]:
    """Split `rows` into (train, val): `size` a fraction of them or a count; stratified when possible."""
    n_val = size if isinstance(size, int) else math.ceil(size * len(rows))
    if n_val == 0:
        return rows, rows[:0]
    if n_val >= len(rows):
        return rows[:0], rows
    if strata is not None:
        try:
            train, val = stratified_shuffle_split(strata[rows], n_val, seed)
            return rows[train], rows[val]
        except ValueError:
            pass  # a class too small to appear on both sides: an unstratified split is the best there is
    train, val = shuffle_split(len(rows), n_val, seed)
    return rows[train], rows[val]


def _check_strata(strata: np.ndarray, least: int, why: str, fix: str) -> None:
    codes, counts = np.unique(strata, return_counts=True)
    small = counts.argmin()
    count = int(counts[small])
    _need(count >= least, f"class {codes[small]} has {count} {'row' if count == 1 else 'rows'}; {why} ({fix})")
