"""Coverage of k-fold regression interval rules, training kept apart from the rule (issue 36's harness).

`python bench/coverage.py draw` trains a cheap seeded model (random ReLU features + ridge: a one-hidden-layer
net whose hidden layer is drawn by the seed, its readout fit in closed form) on R fresh 300-row samples per
data-generating process, k and seed count, and saves each draw's per-row test errors, fold ids and the
members' true errors on a 50,000-row pool, computed from the true mean so the pool adds no noise of its own
(MSE: the squared distance from the true mean plus the noise variance there; MAE: E|d − ε| from the noise's
law; mean error: the mean distance; R²: 1 − MSE / the variance of y) under bench/coverage_draws/.
`python bench/coverage.py rules` evaluates every candidate interval rule on the same saved draws and prints
coverage (binomial 95% interval), misses above/below the truth and the median width relative to the estimate.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special

HERE = Path(__file__).resolve().parent
DRAWS = HERE / "coverage_draws"
ROWS, POOL_ROWS, D, HIDDEN, RIDGE = 300, 50_000, 5, 64, 1.0
BETA, BIAS = np.array([1.2, -0.9, 0.6, 0.0, 0.4]), 0.3
LOGNORMAL_SIGMA = 1.0


def mean_fn(x):
    """The true mean: linear with a bend (tests/test_coverage_kfold.py's regression)."""
    return x @ BETA + 0.5 * np.sin(2 * x[:, 0]) + BIAS


def _hetero_sd(x):
    # sd grows with x0, fivefold from its least to its most: 0.25 + Φ(x0) (uniform), scaled to E[sd²] = 1.
    return (0.25 + special.ndtr(x[:, 0])) / math.sqrt(0.0625 + 0.25 + 1 / 3)


def _hetero_exp_sd(x):
    # sd exp(0.75·x0), unbounded: E[sd²] = 1 for x0 ~ N(0, 1) (a heavy-tailed mixture as much as uneven).
    return np.exp(0.75 * x[:, 0] - 0.5625)


# Each noise: (draw(rng, x) -> noise, variance at x). Every one has mean 0 and mean variance 1.
_LN_VAR = (math.exp(LOGNORMAL_SIGMA**2) - 1) * math.exp(LOGNORMAL_SIGMA**2)
NOISES = {
    "normal": (lambda rng, x: rng.normal(size=len(x)), lambda x: np.ones(len(x))),
    "lognormal": (lambda rng, x: (np.exp(LOGNORMAL_SIGMA * rng.normal(size=len(x))) - math.exp(LOGNORMAL_SIGMA**2 / 2))
                  / math.sqrt(_LN_VAR), lambda x: np.ones(len(x))),
    "t3": (lambda rng, x: rng.standard_t(3, size=len(x)) / math.sqrt(3), lambda x: np.ones(len(x))),
    "hetero": (lambda rng, x: _hetero_sd(x) * rng.normal(size=len(x)), lambda x: _hetero_sd(x) ** 2),
    "hetero_exp": (lambda rng, x: _hetero_exp_sd(x) * rng.normal(size=len(x)), lambda x: _hetero_exp_sd(x) ** 2),
}


def kfold_ids(n, k, rng):
    """Fold of each row: a shuffled, balanced assignment (as KFold(shuffle=True))."""
    ids = np.arange(n) % k
    return rng.permutation(ids)


def hidden(seed):
    g = np.random.default_rng([99, seed])
    return g.normal(size=(D, HIDDEN)) / math.sqrt(D), g.normal(size=HIDDEN) * 0.5


def features(x, layer):
    W, b = layer
    return np.maximum(x @ W + b, 0)


def fit(phi, y):
    """Ridge readout with an intercept: (w, c)."""
    m, c = phi.mean(0), y.mean()
    A = phi - m
    w = np.linalg.solve(A.T @ A + RIDGE * np.eye(phi.shape[1]), A.T @ (y - c))
    return w, c - m @ w


def abs_deviation(noise, pool_x):
    """d [pool rows] -> E|d − ε| row by row: the true absolute error of a prediction d off the true mean."""
    if noise in ("normal", "hetero", "hetero_exp"):  # ε ~ N(0, s²): s·(2φ(u) + u·(2Φ(u) − 1)), u = d/s
        s = np.sqrt(NOISES[noise][1](pool_x))
        return lambda d: s * (2 * special.ndtr(d / s) - 1) * d / s + s * 2 * np.exp(-(d / s) ** 2 / 2) / math.sqrt(
            2 * math.pi)
    e = np.sort(NOISES[noise][0](np.random.default_rng(5), np.zeros((1_000_000, D))))  # its law by a large sample
    total, S = e.sum(), np.r_[0, np.cumsum(e)]

    grid = np.linspace(-30, 30, 6001)  # E|d − ε| is convex and smooth: linear between points 0.01 apart
    j = np.searchsorted(e, grid)
    at = (grid * j - S[j] + (total - S[j]) - grid * (len(e) - j)) / len(e)
    return lambda d: np.interp(d, grid, at)


def draw_cell(noise, k, seeds, R, start=0):
    """R draws of one cell: signed errors [R, n, seeds], folds [R, n], each member's true MSE, MAE and mean
    error [R, k*seeds]."""
    pool_x = np.random.default_rng(777).normal(size=(POOL_ROWS, D))
    pool_mu, pool_var = mean_fn(pool_x), NOISES[noise][1](pool_x)
    layers = [hidden(s) for s in range(seeds)]
    pool_phi = [features(pool_x, layer) for layer in layers]
    noise_var = pool_var.mean()
    mean_abs = abs_deviation(noise, pool_x)
    var_y = pool_mu.var() + noise_var
    folds, truth, truth_mae, truth_me, signed, ys = [], [], [], [], [], []
    for r in range(start, start + R):
        rng = np.random.default_rng([2026, k, seeds, r, list(NOISES).index(noise)])
        x = rng.normal(size=(ROWS, D))
        y = mean_fn(x) + NOISES[noise][0](rng, x)
        f = kfold_ids(ROWS, k, rng)
        pred = np.empty((ROWS, seeds))
        mse, mae, me = [], [], []
        for s, layer in enumerate(layers):
            phi = features(x, layer)
            for j in range(k):
                test = f == j
                w, c = fit(phi[~test], y[~test])
                pred[test, s] = phi[test] @ w + c
                d = pool_phi[s] @ w + c - pool_mu
                mse.append((d**2).mean() + noise_var)
                mae.append(mean_abs(d).mean())
                me.append(d.mean())
        signed.append(pred - y[:, None])
        ys.append(y)
        folds.append(f)
        truth.append(mse)
        truth_mae.append(mae)
        truth_me.append(me)
    mse = np.array(truth)
    mae, me = np.array(truth_mae), np.array(truth_me)
    return np.array(signed), np.array(ys), np.array(folds), mse, mae, me, 1 - mse / var_y


def cell_path(noise, k, seeds):
    return DRAWS / f"{noise}_k{k}_s{seeds}.npz"


def cmd_draw(args):
    DRAWS.mkdir(exist_ok=True)
    for noise in args.noises:
        for k in args.k:
            for seeds in args.seeds:
                t0 = time.perf_counter()
                signed, y, folds, mse, mae, me, r2 = draw_cell(noise, k, seeds, args.R)
                np.savez_compressed(cell_path(noise, k, seeds), signed=signed, y=y, folds=folds, mse=mse, mae=mae,
                                    me=me, r2=r2)
                print(f"{noise} k={k} seeds={seeds}: {args.R} draws in {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("draw")
    d.add_argument("--R", type=int, default=400)
    d.add_argument("--noises", nargs="+", default=list(NOISES))
    d.add_argument("--k", nargs="+", type=int, default=[5, 10])
    d.add_argument("--seeds", nargs="+", type=int, default=[1, 3])
    r = sub.add_parser("rules")
    r.add_argument("--noises", nargs="+", default=list(NOISES))
    r.add_argument("--k", nargs="+", type=int, default=[5, 10])
    r.add_argument("--seeds", nargs="+", type=int, default=[1, 3])
    r.add_argument("--rules", nargs="+", default=None)
    r.add_argument("--metric", choices=["mse", "mae", "me", "r2"], default="mse")
    args = p.parse_args(argv)
    if args.command == "draw":
        cmd_draw(args)
    else:
        import coverage_rules
        coverage_rules.report(args)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
