"""Means, standard errors and 95% intervals: the one place every reported ± comes from."""

import functools
import math

import numpy as np

Z95 = 1.96

# t_{0.975, df} for df = 1..30, used only if scipy is missing; beyond 30, linear in 1/df
# towards 1.96 (within 0.001 of the exact value).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom."""
    try:
        # scipy.stats.t.ppf's own routine: scipy.special loads in ~0.05 s, scipy.stats in ~0.4 s.
        from scipy.special import stdtrit
    except ImportError:
        if df <= 30:
            return _T975[df - 1]
        return Z95 + (_T975[-1] - Z95) * 30 / df
    return float(stdtrit(df, 0.975))


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def mean_ci(values) -> dict:
    """Mean, sd (ddof=1), se = sd/√n, ci95 = mean ± 1.96·se, ci95_t and n of the finite values."""
    x = _finite(values)
    n = int(x.size)
    out = {"mean": float(x.mean()) if n else None, "sd": None, "se": None, "ci95": None, "ci95_t": None, "n": n}
    if n < 2:
        return out  # one value has no spread to estimate; callers render "n/a"
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    t = t975(n - 1)
    out.update(sd=sd, se=se, ci95=[mean - Z95 * se, mean + Z95 * se], ci95_t=[mean - t * se, mean + t * se])
    return out


def wilson(p: float, n: float, z: float = Z95) -> list[float]:
    """Wilson's score interval (95% with the default z) for a proportion p observed over n (effective) trials."""
    z2 = z**2
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At p = 0 or 1 the near end is exactly that bound; rounding would leave it a hair inside.
    return [0.0 if p == 0 else max(0.0, center - half), 1.0 if p == 1 else min(1.0, center + half)]


def in_range(d: dict, low: float, high: float, proportion: bool = False, n_rows: int | None = None,
             unit: str = "values", z: float = Z95) -> dict:
    """`d` (a mean_ci-shaped dict) with ci95 and ci95_t kept inside [low, high], saying how in "interval".

    `z`: the quantile d's ci95 was made with (Student's t for a few folds), used by Wilson's interval too.
    A proportion gets Wilson's interval with the effective sample size p(1-p)/se² (Korn & Graubard): n - 1
    for n 0/1 values (se has ddof=1), larger for averaged values; with no spread it falls back to `n_rows`
    (or n) trials.
    Other metrics keep mean ± 1.96·se, clipped to the range. A zero-width interval says why in "note".
    """
    out = dict(d)
    mean, se = out.get("mean"), out.get("se")
    if mean is None or not math.isfinite(mean) or se is None:
        return out
    if proportion and 0 <= mean <= 1:
        n = out["n"]
        if se > 0 and 0 < mean < 1:
            n_eff = mean * (1 - mean) / se**2
        else:  # every unit scored the same: count the rows behind them, not the units
            n_eff = float(n_rows or n)
        out["ci95"] = wilson(mean, n_eff, z)
        out["interval"] = f"Wilson, effective n = {n_eff:.0f}"
    else:
        lo, hi = out["ci95"]
        out["ci95"] = [max(low, lo), min(high, hi)]
        clipped = out["ci95"] != [lo, hi]
        out["interval"] = f"mean ± {z:.3g}·SE" + (f", clipped to [{low:g}, {high:g}]" if clipped else "")
    if z != Z95:
        out["interval"] += f" (Student's t, {out['n'] - 1} df)"
    if out.get("ci95_t") is not None:
        out["ci95_t"] = [max(low, out["ci95_t"][0]), min(high, out["ci95_t"][1])]
    if se == 0:
        out["note"] = f"zero spread: all {out['n']} {unit} scored {mean:.4g}"
    return out


# The upper end of `inverse_root_scale` is at most this many times the estimate: where t·SE reaches 1.5 times
# the estimate the folds cannot bound the loss from above, and a finite bound keeps results.json plain JSON.
INVERSE_ROOT_MAX_RATIO = 16.0


def inverse_root_scale(mean: float, se: float, q: float) -> list[float]:
    """mean ± q·se on the scale of mean^(-1/2) (the delta method), mapped back: [mean/(1 + r/2)², mean/(1 − r/2)²]
    with r = q·se/mean, the upper end at most INVERSE_ROOT_MAX_RATIO·mean.

    For a positive loss whose per-row values are skewed right (squared errors): a sample that missed the rare
    large losses scores low with a small SE, so the SE grows faster than the estimate, and the interval must
    reach further above than the log scale's mean·exp(±r) does (for MSE it is 1/RMSE ± q·SE of 1/RMSE).
    """
    half = q * se / mean / 2
    return [mean / (1 + half) ** 2, mean / (1 - min(half, 1 - INVERSE_ROOT_MAX_RATIO**-0.5)) ** 2]


def nadeau_bengio_se(values, n_train: float, n_test: float) -> float | None:
    """Nadeau–Bengio corrected SE over the n fold scores of a k-fold, repeated or not:
    sqrt((1/n + n_test/n_train)·sd²)."""
    x = _finite(values)
    if x.size < 2:
        return None
    # Folds share training rows, so their scores are correlated and sd/√n is too small;
    # the n_test/n_train term inflates the variance for that overlap.
    return math.sqrt((1 / x.size + n_test / n_train) * float(x.var(ddof=1)))


def fmt_interval(d: dict | None, digits: int = 3, compact: bool = False) -> str:
    """Render an interval dict as "0.830 ± 0.014" (symmetric ci95), "0.830 [0.790, 0.862]", "0.830 (n/a)" or "n/a";
    `compact` drops the bounds' leading zeros and spaces ("0.830 [.790,.862]") for narrow terminals."""
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "n/a"
    mean = f"{d['mean']:.{digits}f}"
    if d.get("se") is None:
        return f"{mean} (n/a)"
    lo, hi = d.get("ci95") or (d["mean"] - Z95 * d["se"], d["mean"] + Z95 * d["se"])
    if abs((hi - d["mean"]) - (d["mean"] - lo)) > 0.5 * 10**-digits:  # Wilson, percentile or clipped
        if compact:
            return f"{mean} [{_short(lo, digits)},{_short(hi, digits)}]"
        return f"{mean} {fmt_range([lo, hi], digits)}"
    half = (hi - lo) / 2
    return f"{mean}±{_short(half, digits)}" if compact else f"{mean} ± {half:.{digits}f}"


def _short(x: float, digits: int) -> str:
    """A bound without its leading zero: 0.742 -> ".742", -0.05 -> "-.050"."""
    text = f"{x:.{digits}f}"
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text


def fmt_range(pair, digits: int = 3) -> str:
    """Render an interval [lo, hi] as "[0.816, 0.844]", or "n/a" when missing."""
    if pair is None:
        return "n/a"
    return f"[{pair[0]:.{digits}f}, {pair[1]:.{digits}f}]"


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` (integer) degrees of freedom, without scipy (`runner report`
    stays light): Abramowitz & Stegun 26.7.3-4, exact for integer df; the normal tail beyond 5000 df."""
    if math.isnan(t):
        return math.nan
    t, df = abs(float(t)), int(df)
    if math.isinf(t):
        return 0.0
    if df > 5000:
        return math.erfc(t / math.sqrt(2))
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd
        total, term = 0.0, 1.0
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):  # 1 + 2/3 c² + 2·4/(3·5) c⁴ + ...
                term *= (k - 1) / k * c2
                total += term
        inside = (2 / math.pi) * (theta + s * math.cos(theta) * total) if df > 1 else 2 * theta / math.pi
    else:
        total = term = 1.0
        for k in range(2, df - 1, 2):  # 1 + 1/2 c² + 1·3/(2·4) c⁴ + ...
            term *= (k - 1) / k * c2
            total += term
        inside = s * total
    return min(1.0, max(0.0, 1.0 - inside))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with integer `df`, by bisection on `t_two_sided_p` (no scipy)."""
    lo, hi = 0.0, 1e4
    target = 2 * (1 - p)  # the two-sided tail beyond the quantile
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > target else (lo, mid)
    return (lo + hi) / 2


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjustment of `pvalues` (None stays None): the i-th smallest of m is multiplied by
    m − i + 1, kept monotone, capped at 1; it controls the family-wise error at any level."""
    known = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    m, running = len(known), 0.0
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
