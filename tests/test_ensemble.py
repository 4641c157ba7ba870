"""Ensemble combinations: known answers for mean, vote, linear and log-linear, and learned weights."""

import numpy as np
import pandas as pd
import pytest

from runner.ensemble.combine import combine, fold_ensembles, learn_weights


def _probs(M, n, C, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(C), size=(M, n))
    return p


def test_an_ensemble_of_copies_equals_the_model():
    p = _probs(1, 30, 3)
    copies = np.repeat(p, 4, axis=0)
    for how in ("mean", "linear", "loglinear"):
        np.testing.assert_allclose(combine(copies, how), p[0], atol=1e-12)
    np.testing.assert_array_equal(combine(copies, "vote").argmax(-1), p[0].argmax(-1))


def test_linear_with_one_weight_is_that_member_and_sums_to_one():
    p = _probs(3, 25, 4)
    out = combine(p, "linear", [1.0, 0.0, 0.0])
    np.testing.assert_allclose(out, p[0])
    np.testing.assert_allclose(combine(p, "linear", [0.2, 0.5, 0.3]).sum(-1), 1.0)


def test_loglinear_lets_a_near_zero_probability_veto_a_class():
    confident = np.array([[[0.6, 0.4]]])
    veto = np.array([[[1e-9, 1 - 1e-9]]])
    both = np.concatenate([confident, veto])
    assert combine(both, "mean")[0, 0] == pytest.approx(0.3)  # the OR keeps class 0 alive
    out = combine(both, "loglinear", [1.0, 1.0])
    assert out[0, 0] < 1e-8 and out.sum() == pytest.approx(1.0)  # the AND: one model rules class 0 out


def test_vote_shares_are_the_members_votes():
    p = np.array([[[0.9, 0.1]], [[0.4, 0.6]], [[0.7, 0.3]]])
    np.testing.assert_allclose(combine(p, "vote"), [[2 / 3, 1 / 3]])


@pytest.mark.parametrize("how", ["linear", "loglinear"])
def test_learned_weights_do_not_lose_to_uniform_on_validation(how):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    good = np.eye(3)[y] * 0.7 + 0.1  # a good member, a noisy one and a wrong-headed one
    noisy = _probs(1, 200, 3, seed=2)[0]
    bad = np.roll(good, 1, axis=1)
    values = np.stack([good, noisy, bad])
    lam = learn_weights(values, y, how)
    nll = lambda p: -np.mean(np.log(p[np.arange(200), y]))  # noqa: E731
    assert nll(combine(values, how, lam)) <= nll(combine(values, how)) + 1e-9
    if how == "linear":
        assert lam.min() >= 0 and lam.sum() == pytest.approx(1.0) and lam.argmax() == 0


def test_fold_ensembles_are_formed_per_split_from_its_members():
    rows = []
    for fold in range(3):
        for seed in range(2):
            for r in range(fold * 5, fold * 5 + 5):
                p1 = 0.2 + 0.1 * seed + 0.01 * r
                rows.append({"member": fold * 2 + seed, "fold": fold, "repeat": 0, "seed": seed, "row": r,
                             "y_true": str(r % 2), "y_pred": str(int(p1 > 0.5)), "p_0": 1 - p1, "p_1": p1})
    test = pd.DataFrame(rows)
    out, used = fold_ensembles(test, None, ["0", "1"], "mean")
    assert sorted(out.member.unique()) == [0, 1, 2] and len(out) == 15 and "seed" not in out.columns
    for fold in range(3):
        part = test[test.fold == fold]
        want = part.groupby("row").p_1.mean().to_numpy()
        np.testing.assert_allclose(out[out.fold == fold].sort_values("row").p_1, want)
    assert all(np.allclose(u, 0.5) for u in used)
