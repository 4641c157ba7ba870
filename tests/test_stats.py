"""Means, SEs and intervals against hand-computed values."""

import math
import sys

import numpy as np
import pytest

from runner.evaluate import stats
from runner.evaluate.stats import fmt_interval, mean_ci, nadeau_bengio_se


def test_mean_ci_known_values():
    d = mean_ci([1, 2, 3, 4, 5])
    assert d["n"] == 5 and d["mean"] == 3.0
    assert d["sd"] == pytest.approx(1.58114, abs=1e-5)
    assert d["se"] == pytest.approx(0.70711, abs=1e-5)
    lo, hi = d["ci95"]
    assert (hi - lo) / 2 == pytest.approx(1.38593, abs=1e-5)
    lo, hi = d["ci95_t"]
    assert (hi - lo) / 2 == pytest.approx(2.776 * 0.70711, abs=1e-3)  # t_{0.975, 4} = 2.776


def test_t_interval_for_ten_values_uses_2_262():
    d = mean_ci(np.arange(10.0))
    assert (d["ci95_t"][1] - d["ci95_t"][0]) / 2 == pytest.approx(2.262 * d["se"], abs=1e-3)


def test_t_table_without_scipy(monkeypatch):
    exact = [stats.t975(df) for df in (1, 9, 30, 60, 500)]
    from scipy.stats import t

    assert exact == pytest.approx([t.ppf(0.975, df) for df in (1, 9, 30, 60, 500)], rel=1e-12)
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # import now raises ImportError
    table = [stats.t975(df) for df in (1, 9, 30, 60, 500)]
    assert table[1] == 2.262
    assert table == pytest.approx(exact, abs=1.5e-3)


@pytest.mark.parametrize("values", [[], [0.7], [np.nan, 0.7, np.inf]])
def test_fewer_than_two_values_give_no_interval(values):
    d = mean_ci(values)
    assert d["n"] == (0 if not values else 1)
    assert d["sd"] is None and d["se"] is None and d["ci95"] is None and d["ci95_t"] is None
    assert fmt_interval(d) == ("n/a" if not values else "0.700 (n/a)")


def test_nan_values_are_dropped_and_not_counted():
    d = mean_ci([1.0, np.nan, 3.0])
    assert d["n"] == 2 and d["mean"] == 2.0 and d["sd"] == pytest.approx(math.sqrt(2))


def test_nadeau_bengio_se_hand_value():
    values = [1, 2, 3, 4, 5]  # sd² = 2.5
    assert nadeau_bengio_se(values, n_train=90, n_test=10) == pytest.approx(math.sqrt((1 / 5 + 10 / 90) * 2.5))
    # The correction only ever widens the naive sd/√n.
    assert nadeau_bengio_se(values, 90, 10) > mean_ci(values)["se"]
    assert nadeau_bengio_se([0.8], 90, 10) is None


def test_fmt_interval():
    assert fmt_interval({"mean": 0.83, "se": 0.014 / 1.96}) == "0.830 ± 0.014"
    assert fmt_interval({"mean": 0.83, "se": None}) == "0.830 (n/a)"
    assert fmt_interval(None) == "n/a"
    assert fmt_interval(mean_ci([1, 2, 3, 4, 5]), digits=2) == "3.00 ± 1.39"


def test_fmt_interval_shows_an_asymmetric_interval_as_its_ends():
    assert fmt_interval({"mean": 0.95, "se": 0.03, "ci95": [0.86, 0.98]}) == "0.950 [0.860, 0.980]"
    assert fmt_interval({"mean": 0.5, "se": 0.05, "ci95": [0.402, 0.598]}) == "0.500 ± 0.098"


@pytest.mark.parametrize("k,n", [(50, 61), (61, 61), (0, 12), (3, 300)])
def test_wilson_equals_scipy(k, n):
    from scipy.stats import binomtest

    want = binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert stats.wilson(k / n, n) == pytest.approx([want.low, want.high], abs=2e-5)  # scipy's z is 1.95996


def test_a_proportion_over_rows_gets_wilson_and_never_leaves_0_1():
    z = np.r_[np.ones(59), np.zeros(2)]
    d = stats.in_range(mean_ci(z), 0, 1, proportion=True)
    # p(1-p)/se² with se's ddof=1 is n - 1 for 0/1 values: Wilson over 60 trials
    assert d["ci95"] == pytest.approx(stats.wilson(59 / 61, 60)) and d["interval"] == "Wilson, effective n = 60"
    assert mean_ci(z)["ci95"][1] > 1 - 1e-3 and d["ci95"][1] < 0.992  # the normal one nearly reaches 1
    perfect = stats.in_range(mean_ci(np.ones(5)), 0, 1, proportion=True, n_rows=303, unit="folds")
    # every fold scored 1.0: no spread among 5 folds, so Wilson over the 303 rows behind them, and a note why
    assert perfect["ci95"] == pytest.approx(stats.wilson(1.0, 303)) and perfect["ci95"][1] == 1.0
    assert perfect["note"] == "zero spread: all 5 folds scored 1"


def test_other_metrics_are_clipped_to_their_range_and_say_so():
    d = stats.in_range(mean_ci([0.0001, 0.0, 0.0002, 0.0]), 0, 1)
    assert d["ci95"][0] == 0 and d["ci95_t"][0] == 0 and d["interval"] == "mean ± 1.96·SE, clipped to [0, 1]"
    inside = stats.in_range(mean_ci([0.4, 0.5, 0.6]), 0, 1)
    assert inside["ci95"] == mean_ci([0.4, 0.5, 0.6])["ci95"] and inside["interval"] == "mean ± 1.96·SE"


def test_t_two_sided_p_and_quantile_equal_scipy_without_importing_it():
    from scipy import stats

    from runner.evaluate.stats import t_quantile, t_two_sided_p

    for df in (1, 2, 3, 4, 5, 9, 10, 59, 300):
        for t in (0.0, 0.5, 1.96, 2.5, -4.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), abs=1e-12)
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-9)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_two_sided_p(2.0, 10_000) == pytest.approx(0.0455003, abs=1e-6)  # the normal tail


def test_holm_equals_the_hand_computation():
    from runner.evaluate.stats import holm

    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> kept at 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm([0.6, 0.9]) == [1.0, 1.0] and holm([]) == [] and holm([0.2]) == [0.2]


def test_inverse_root_scale_interval_known_values():
    lo, hi = stats.inverse_root_scale(1.0, 0.1, 2.0)
    assert lo == pytest.approx(1 / 1.1**2) and hi == pytest.approx(1 / 0.9**2)  # 1/√ of the ends: 1 ∓ 0.1
    lo, hi = stats.inverse_root_scale(4.0, 0.5, 2.262)
    assert 1 / math.sqrt(lo) + 1 / math.sqrt(hi) == pytest.approx(2 / math.sqrt(4.0))  # symmetric in mean^(-1/2)
    assert hi - 4.0 > 4.0 - lo  # reaches further above than below
    # t·SE at twice the mean: 1 − r/2 would be 0 (no upper end); the upper end stops at 16 times the mean
    assert stats.inverse_root_scale(2.0, 2.0, 2.0) == pytest.approx([2.0 / 4, 32.0])


def _kfold_regression(fold_errors):
    """A predictions table of one member per fold whose squared errors are `fold_errors` (y_true 0)."""
    import pandas as pd

    rows, frames = 0, []
    for fold, errors in enumerate(fold_errors):
        e = np.asarray(errors, float)
        frames.append(pd.DataFrame({"member": fold, "fold": fold, "repeat": 0, "seed": 0,
                                    "row": np.arange(rows, rows + len(e)), "y_true": 0.0, "y_pred": e}))
        rows += len(e)
    return pd.concat(frames, ignore_index=True)


def test_kfold_mse_and_rmse_headlines_equal_the_hand_computation():
    from runner.evaluate.headline import summarize_table

    # errors (1, 1), (2, 0), (3, 1), (0, 2), (2, 2): fold MSEs 1, 2, 5, 2, 4 -> mean 2.8, sd² 2.7
    table = _kfold_regression([[1, 1], [2, 0], [3, 1], [0, 2], [2, 2]])
    out = summarize_table(table, "regression")
    mse, rmse = out["test/mse"], out["test/rmse"]
    # Nadeau–Bengio over 5 folds of 2 test rows (8 training rows): √((1/5 + 2/8)·2.7) = 1.10227, above the 10
    # rows' SE √(7.7333/10) = 0.87939 (squared errors 1 1 4 0 9 1 0 4 4 4), so no floor; t_{0.975, 4} = 2.776445
    se, t = math.sqrt(0.45 * 2.7), 2.776445
    assert mse["mean"] == pytest.approx(2.8) and mse["se"] == pytest.approx(se)
    half = t * se / (2 * 2.8)
    want = [2.8 / (1 + half) ** 2, 2.8 / (1 - half) ** 2]
    assert mse["ci95"] == pytest.approx(want, rel=1e-6) and mse["ci95_t"] == mse["ci95"]
    assert mse["ci95"] == pytest.approx([1.17074, 13.61448], abs=1e-4)
    assert mse["interval"] == "Nadeau–Bengio; inverse-root scale: mean/(1 ± 2.78·SE/(2·mean))² (Student's t, 4 df)"
    assert mse["others"]["folds"]["se"] == pytest.approx(math.sqrt(2.7 / 5))  # uncorrected, kept labelled
    # RMSE: the root of the folds' mean MSE, not the mean of the folds' roots (biased low), and the root interval
    assert rmse["mean"] == pytest.approx(math.sqrt(2.8)) and rmse["ci95"] == pytest.approx(np.sqrt(want))
    roots = np.sqrt([1, 2, 5, 2, 4])
    assert rmse["others"]["fold_rmse"]["mean"] == pytest.approx(roots.mean()) and roots.mean() < rmse["mean"]
    assert rmse["se"] == pytest.approx(se / (2 * math.sqrt(2.8)))


def test_kfold_headline_se_is_floored_at_the_test_rows_se():
    from runner.evaluate.headline import summarize_table

    # Five folds of 4 rows with squared errors alike per fold (fold MSEs 2, 2, 2, 2, 2.25): the folds' spread is
    # tiny, the rows' is not. Rows: errors² 1 1 1 5 (x4) and 1 1 1 6: mean 2.05, sd² 3.5237 (ddof 1) over 20 rows.
    errors = [[1, 1, 1, math.sqrt(5)]] * 4 + [[1, 1, 1, math.sqrt(6)]]
    mse = summarize_table(_kfold_regression(errors), "regression")["test/mse"]
    sq = np.array([1, 1, 1, 5] * 4 + [1, 1, 1, 6], float)
    rows_se = sq.std(ddof=1) / math.sqrt(20)
    assert mse["mean"] == pytest.approx(2.05) and mse["se"] == pytest.approx(rows_se)
    assert rows_se > nadeau_bengio_se([2, 2, 2, 2, 2.25], n_train=16, n_test=4)
    assert mse["interval"].startswith("Nadeau–Bengio; SE floored at the 20 test rows' SE; inverse-root scale")
