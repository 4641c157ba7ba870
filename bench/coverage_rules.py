"""Candidate k-fold MSE interval rules for bench/coverage.py, each scored on the same saved draws.

A rule gets one draw's per-row losses L [n] (each row's squared errors, or absolute or signed errors, averaged
over its seeds), the fold of each row and k, and returns (lo, hi) around the headline estimate: the mean of the
folds' mean losses. RMSE's interval is the root of MSE's, so it covers the root of the truth when MSE's does.
"""

import math

import numpy as np
from scipy import stats

from coverage import cell_path

Z = 1.959964
B = 999


def _parts(L, folds, k):
    fm = np.array([L[folds == j].mean() for j in range(k)])
    est = fm.mean()
    se_folds = fm.std(ddof=1) / math.sqrt(k)
    # rows, stratified by fold: the SE of the mean of fold means, each fold mean's SE from its rows
    se_rows = math.sqrt(sum(L[folds == j].var(ddof=1) / (folds == j).sum() for j in range(k))) / k
    return est, fm, se_folds, se_rows


def _log(est, se, q):
    h = q * se / est
    return est * math.exp(-h), est * math.exp(h)


def t_folds(L, folds, k, rng):
    est, _, se, _ = _parts(L, folds, k)
    q = stats.t.ppf(0.975, k - 1)
    return est - q * se, est + q * se


def t_floor(L, folds, k, rng):
    """runner's rule for a metric that is not a skewed loss (mean error): the folds' SE floored at the rows'."""
    est, _, se, _ = _parts(L, folds, k)
    se = max(se, L.std(ddof=1) / math.sqrt(len(L)))
    q = stats.t.ppf(0.975, k - 1)
    return est - q * se, est + q * se


def log_folds(L, folds, k, rng):
    """runner's rule before: the folds' MSE on the log scale, Student's t with k-1 df."""
    est, _, se, _ = _parts(L, folds, k)
    return _log(est, se, stats.t.ppf(0.975, k - 1))


def nb_log_folds(L, folds, k, rng):
    """Nadeau–Bengio's correction applied to one k-fold: SE² = (1/k + n_test/n_train)·sd²."""
    est, fm, _, _ = _parts(L, folds, k)
    se = math.sqrt((1 / k + 1 / (k - 1)) * fm.var(ddof=1))
    return _log(est, se, stats.t.ppf(0.975, k - 1))


def rows(L, folds, k, rng):
    est, _, _, se = _parts(L, folds, k)
    return est - Z * se, est + Z * se


def log_rows(L, folds, k, rng):
    est, _, _, se = _parts(L, folds, k)
    return _log(est, se, Z)


def log_floor(L, folds, k, rng):
    """Log scale, SE = max(folds, rows), Student's t with k-1 df."""
    est, _, sf, sr = _parts(L, folds, k)
    return _log(est, max(sf, sr), stats.t.ppf(0.975, k - 1))


def log_floor_z(L, folds, k, rng):
    """Log scale: the folds' SE with t (k-1 df) or the rows' SE with 1.96, whichever is wider."""
    est, _, sf, sr = _parts(L, folds, k)
    return _log(est, max(sf * stats.t.ppf(0.975, k - 1), sr * Z), 1.0)


def _hall(est, se, gamma, n):
    """Hall's (1992) skewness-removing transformation of the t statistic: (lo, hi) for the mean."""
    a = gamma / (3 * math.sqrt(n))
    b = a / 2
    if abs(a) < 1e-12:
        return est - Z * se, est + Z * se

    def ginv(x):
        return (np.cbrt(1 + 3 * a * (x - b)) - 1) / a

    return est - se * ginv(Z), est - se * ginv(-Z)


def _skew(L):
    d = L - L.mean()
    return float((d**3).mean() / (d**2).mean() ** 1.5)


def hall_rows(L, folds, k, rng):
    est, _, _, se = _parts(L, folds, k)
    return _hall(est, se, _skew(L), len(L))


def hall_floor(L, folds, k, rng):
    """Hall's skew correction over rows, SE = max(rows, folds·t/1.96)."""
    est, _, sf, sr = _parts(L, folds, k)
    se = max(sr, sf * stats.t.ppf(0.975, k - 1) / Z)
    return _hall(est, se, _skew(L), len(L))


def _boot(L, folds, k, rng):
    """Stratified (rows within their fold) resamples: (est*, se_rows*) [B] each."""
    order = np.argsort(folds, kind="stable")
    Lk = L[order].reshape(k, -1)
    m = Lk.shape[1]
    idx = rng.integers(0, m, size=(B, k, m))
    X = np.take_along_axis(np.broadcast_to(Lk, (B, k, m)), idx, axis=2)
    fm = X.mean(2)
    est = fm.mean(1)
    se = np.sqrt((X.var(2, ddof=1) / m).sum(1)) / k
    return est, se


def boot_pct_rows(L, folds, k, rng):
    est, _ = _boot(L, folds, k, rng)
    lo, hi = np.percentile(est, [2.5, 97.5])
    return lo, hi


def boott_rows(L, folds, k, rng):
    """Studentized bootstrap over rows kept in their folds, on the raw scale."""
    e0, _, _, s0 = _parts(L, folds, k)
    est, se = _boot(L, folds, k, rng)
    t = (est - e0) / se
    qlo, qhi = np.percentile(t, [2.5, 97.5])
    return e0 - qhi * s0, e0 - qlo * s0


def boott_log_rows(L, folds, k, rng):
    """Studentized bootstrap over rows kept in their folds, on the log scale (SE/mean)."""
    e0, _, _, s0 = _parts(L, folds, k)
    est, se = _boot(L, folds, k, rng)
    t = (np.log(est) - math.log(e0)) / (se / est)
    qlo, qhi = np.percentile(t, [2.5, 97.5])
    return e0 * math.exp(-qhi * s0 / e0), e0 * math.exp(-qlo * s0 / e0)


def boott_folds(L, folds, k, rng):
    """Studentized bootstrap over the k fold means (log scale)."""
    e0, fm, sf, _ = _parts(L, folds, k)
    idx = rng.integers(0, k, size=(B, k))
    X = fm[idx]
    est, se = X.mean(1), X.std(1, ddof=1) / math.sqrt(k)
    ok = se > 0
    t = (np.log(est[ok]) - math.log(e0)) / (se[ok] / est[ok])
    qlo, qhi = np.percentile(t, [2.5, 97.5])
    return e0 * math.exp(-qhi * sf / e0), e0 * math.exp(-qlo * sf / e0)


def _nb(fm, k):
    return math.sqrt((1 / k + 1 / (k - 1)) * fm.var(ddof=1))


def _power(est, se, q, lam):
    """mean ± q·se on the scale of mean^lam (lam < 0), mapped back; an unbounded upper end is inf."""
    r = abs(lam) * q * se / est
    return est * (1 + r) ** (1 / lam), est * (1 - r) ** (1 / lam) if r < 1 else math.inf


def nb_floor_log(L, folds, k, rng):
    """Log scale, SE = max(Nadeau–Bengio over folds, rows)."""
    est, fm, _, sr = _parts(L, folds, k)
    return _log(est, max(_nb(fm, k), sr), stats.t.ppf(0.975, k - 1))


def nb_cuberoot(L, folds, k, rng):
    """Nadeau–Bengio SE over folds, on the mean^(-1/3) scale."""
    est, fm, _, _ = _parts(L, folds, k)
    return _power(est, _nb(fm, k), stats.t.ppf(0.975, k - 1), -1 / 3)


def nb_inverse_root(L, folds, k, rng):
    """Nadeau–Bengio SE over folds, on the mean^(-1/2) scale (unbounded above when r ≥ 2)."""
    est, fm, _, _ = _parts(L, folds, k)
    return _power(est, _nb(fm, k), stats.t.ppf(0.975, k - 1), -1 / 2)


def nb_floor_cuberoot(L, folds, k, rng):
    est, fm, _, sr = _parts(L, folds, k)
    return _power(est, max(_nb(fm, k), sr), stats.t.ppf(0.975, k - 1), -1 / 3)


def nb_floor_inverse_root_z(L, folds, k, rng):
    """As runner's rule, with 1.96 in place of Student's t."""
    from runner.evaluate.stats import inverse_root_scale
    est, fm, _, _ = _parts(L, folds, k)
    return inverse_root_scale(est, max(_nb(fm, k), L.std(ddof=1) / math.sqrt(len(L))), Z)


def runner_rule(L, folds, k, rng):
    """runner's rule (evaluate.headline): SE = max(Nadeau–Bengio over folds, test rows), Student's t with k-1 df,
    on the inverse-root scale (runner.evaluate.stats.inverse_root_scale, upper end at most 16× the mean)."""
    from runner.evaluate.stats import inverse_root_scale, nadeau_bengio_se, t975
    est, fm, _, _ = _parts(L, folds, k)
    n_test = len(L) / k
    se = max(nadeau_bengio_se(fm, len(L) - n_test, n_test), L.std(ddof=1) / math.sqrt(len(L)))
    return inverse_root_scale(est, se, t975(k - 1))


def union_log_boott(L, folds, k, rng):
    """The union of the folds' log-scale interval and the rows' studentized bootstrap."""
    a, b = log_folds(L, folds, k, rng), boott_log_rows(L, folds, k, rng)
    return min(a[0], b[0]), max(a[1], b[1])


def union_log_hall(L, folds, k, rng):
    """The union of the folds' log-scale interval and Hall's skew-corrected interval over rows."""
    a, b = log_folds(L, folds, k, rng), hall_rows(L, folds, k, rng)
    return min(a[0], b[0]), max(a[1], b[1])


RULES = {f.__name__: f for f in (t_folds, t_floor, log_folds, nb_log_folds, rows, log_rows, log_floor, log_floor_z,
                                 hall_rows, hall_floor, boot_pct_rows, boott_rows, boott_log_rows, boott_folds,
                                 union_log_boott, union_log_hall, nb_floor_log, nb_cuberoot, nb_inverse_root,
                                 nb_floor_cuberoot, nb_floor_inverse_root_z, runner_rule)}


def wilson(p, n, z=Z):
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0, c - h), min(1, c + h)


def per_row(signed, metric):
    """[R, n]: each row's loss averaged over its seeds (squared error, absolute error or signed error)."""
    value = {"mse": signed**2, "mae": np.abs(signed), "me": signed}[metric]
    return value.mean(2)


def evaluate(rule, rows, folds, truth, seed=0, relative=True):
    """(coverage, misses with the truth above, below, median width / estimate, or the width itself where not
    `relative`: a mean would be infinite for a rule unbounded above)."""
    rng = np.random.default_rng(seed)
    R, k = len(rows), int(folds.max()) + 1
    hit = above = below = 0
    widths = []
    for r in range(R):
        L = rows[r]
        lo, hi = rule(L, folds[r], k, rng)
        t = truth[r].mean()
        hit += lo <= t <= hi
        above += t > hi
        below += t < lo
        widths.append((hi - lo) / (L.mean() if relative else 1))
    return hit / R, above, below, float(np.median(widths))


def fold_r2(signed, y, folds, k):
    """[k]: each fold's R² (its seeds averaged), 1 − SS_res / SS_tot over the fold's rows, as sklearn per member."""
    sq = (signed**2).mean(1)
    return np.array([1 - sq[folds == j].sum() / ((y[folds == j] - y[folds == j].mean()) ** 2).sum() for j in range(k)])


def r2_t_folds(r2, k):
    """runner's R² headline: mean ± t·SE over the folds."""
    q, se = stats.t.ppf(0.975, k - 1), r2.std(ddof=1) / math.sqrt(k)
    return r2.mean() - q * se, r2.mean() + q * se


def r2_nb_folds(r2, k):
    q, se = stats.t.ppf(0.975, k - 1), _nb(r2, k)
    return r2.mean() - q * se, r2.mean() + q * se


def r2_nb_inverse_root(r2, k):
    """1 − R² (an MSE over Var y) as a skewed loss: Nadeau–Bengio SE on the inverse-root scale."""
    from runner.evaluate.stats import inverse_root_scale
    loss = 1 - r2.mean()
    lo, hi = inverse_root_scale(loss, _nb(r2, k), stats.t.ppf(0.975, k - 1))
    return 1 - hi, 1 - lo


R2_RULES = {f.__name__: f for f in (r2_t_folds, r2_nb_folds, r2_nb_inverse_root)}


def _r2_cell(rule, d):
    hit = above = below = 0
    widths = []
    k = int(d["folds"].max()) + 1
    for r in range(len(d["folds"])):
        lo, hi = rule(fold_r2(d["signed"][r], d["y"][r], d["folds"][r], k), k)
        t = d["r2"][r].mean()
        hit, above, below = hit + (lo <= t <= hi), above + (t > hi), below + (t < lo)
        widths.append(hi - lo)
    return hit / len(d["folds"]), above, below, float(np.median(widths))


def report(args):
    cells = [(n, k, s) for n in args.noises for k in args.k for s in args.seeds]
    data = {c: dict(np.load(cell_path(*c))) for c in cells}  # read once: an npz decompresses on every access
    if args.metric == "r2":
        return _table(args.rules or list(R2_RULES), cells, lambda name, d: _r2_cell(R2_RULES[name], d), data,
                      "widths in R² units")
    relative = args.metric != "me"
    return _table(args.rules or list(RULES), cells, lambda name, d: evaluate(
        RULES[name], per_row(d["signed"], args.metric), d["folds"], d[args.metric], relative=relative), data,
        args.metric + ("" if relative else ", widths in its units"))


def _table(names, cells, score, data, metric):
    """Every rule on every cell, then per rule and noise the least coverage and the range of median widths."""
    print(f"test {metric} of the members' mean; truth: their mean true value on the pool")
    print(f"{'rule':<24}" + "".join(f"{f'{n[:6]} k{k} s{s}':>17}" for n, k, s in cells) + f"{'min':>7}")
    results = {}
    for name in names:
        row = results[name] = [score(name, data[c]) for c in cells]
        text = "".join(f"{f'{p:.3f}/{w:.2f} {above}^{below}v':>17}" for p, above, below, w in row)
        print(f"{name:<24}{text}{min(p for p, *_ in row):>7.3f}", flush=True)
    R = len(data[cells[0]]["folds"])
    print(f"\nR = {R} draws a cell; each entry: coverage/median width÷estimate, misses with the truth above (^) and "
          f"below (v); a coverage of 0.95 over R draws has binomial 95% [{wilson(0.95, R)[0]:.3f}, "
          f"{wilson(0.95, R)[1]:.3f}]\n")
    noises = list(dict.fromkeys(n for n, _, _ in cells))
    print("| rule | " + " | ".join(noises) + " |")
    print("| --- |" + " --- |" * len(noises))
    for name, row in results.items():
        parts = []
        for noise in noises:
            mine = [r for c, r in zip(cells, row) if c[0] == noise]
            lo, hi = min(w for *_, w in mine), max(w for *_, w in mine)
            parts.append(f"{min(p for p, *_ in mine):.3f} ({lo:.2f}–{hi:.2f})")
        print(f"| {name} | " + " | ".join(parts) + " |")
    print("\neach entry: the least coverage over k and seeds (median width÷estimate, least–most)")
