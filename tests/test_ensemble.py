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


def test_bootstrap_bags_have_the_original_size_and_repeat_rows(eval_cfg):
    from runner.data.splits import describe_plan, population_plan

    y = np.repeat([0, 1], 50)
    cfg = eval_cfg("kfold", k=4)
    members = population_plan(y, "binary", cfg, [0, 1], bags=3)
    assert len(members) == 4 * 2 * 3 and describe_plan(members, cfg) == "4 folds x 2 seeds x 3 bags"
    plain = population_plan(y, "binary", cfg, [0])
    for m in members:
        split = plain[m.fold]
        assert len(m.train) == len(split.train) and len(np.unique(m.train)) < len(m.train)  # duplicates
        assert set(m.train) <= set(split.train) and np.array_equal(m.test, split.test)
    same_bag = [m for m in members if m.fold == 0 and m.bag == 1]
    assert np.array_equal(same_bag[0].train, same_bag[1].train)  # a bag's rows do not depend on the seed
    assert not np.array_equal(members[0].train, members[1].train)  # bags differ


def test_kfold_mean_ensemble_recomputes_from_predictions_csv(tmp_path):
    import json

    from runner.commands.cli import main

    run = tmp_path / "run"
    assert main(["train", "eval=kfold", "eval.k=3", "trainer.seeds=3", "ensemble=seeds", "trainer.epochs=5",
                 "trainer.progress=false", f"hydra.run.dir={run}"]) == 0
    results = json.loads((run / "results.json").read_text())
    preds = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    accs = []
    for _, fold in preds.groupby("fold"):
        p1 = fold.groupby("row").p_1.mean()
        truth = fold.groupby("row").y_true.first().astype(str)
        accs.append(np.mean((p1 > 0.5).astype(int).astype(str) == truth))
    got = results["ensembles"]["mean"]["metrics"]["test/accuracy"]
    assert got["mean"] == pytest.approx(np.mean(accs)) and got["n"] == 3  # over the 3 folds
    assert results["ensembles"]["mean"]["members"] == 3


def test_dropout_passes_differ_and_are_each_members_own(tmp_path):
    import json

    import torch

    from runner.commands.cli import main
    from runner.config.schema import ModelConfig
    from runner.models import build_model
    from runner.models.stacked import Step

    model = build_model(ModelConfig(hidden=[32], dropout=0.5), 2, 4, 1)
    model.initialize([3, 8], "default")
    alone = build_model(ModelConfig(hidden=[32], dropout=0.5), 1, 4, 1)
    alone.initialize([8], "default")
    x = torch.randn(2, 10, 4)
    model.eval(), alone.eval()
    assert torch.equal(model(x), model(x))  # no dropout at test time unless sampling
    model.sampling = alone.sampling = True
    first, single = model(x, step=Step(key=-1)), alone(x[1:], step=Step(key=-1))
    assert not torch.equal(first, model(x, step=Step(key=-2)))  # each pass draws anew
    torch.testing.assert_close(first[1], single[0])  # a member's passes do not depend on its population

    run = tmp_path / "run"
    assert main(["train", "ensemble=seeds", "ensemble.mc_dropout=4", "model.dropout=0.5", "trainer.epochs=5",
                 "trainer.progress=false", f"hydra.run.dir={run}"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["ensembles"]["mean"]["members"] == 4
    assert len(results["ensembles"]["mean"]["ablation"]["delta_without"]) == 4


def test_every_out_of_fold_prediction_comes_from_a_model_that_never_saw_its_row(eval_cfg):
    from dataclasses import replace

    from runner.data.splits import inner_plan, population_plan
    from runner.ensemble.stacking import out_of_fold

    y = np.repeat([0, 1], 40)
    cfg = eval_cfg("kfold", k=4)
    outer = population_plan(y, "binary", cfg, [0, 1])
    inner = inner_plan(outer, y, "binary", cfg, 3)
    assert len(inner) == 3 * len(outer)
    for m in outer:
        mine = [i for i in inner if (i.fold, i.seed) == (m.fold, m.seed)]
        held = np.concatenate([i.oof for i in mine])
        assert sorted(held) == sorted(np.union1d(m.train, m.val))  # each training row held out exactly once
        for i in mine:
            assert not np.intersect1d(i.oof, np.union1d(i.train, i.val)).size
            assert not np.intersect1d(m.test, np.union1d(i.train, i.val)).size  # nor the outer test rows
    outputs = np.random.default_rng(0).random((len(inner), 40, 2))
    rows, oof, test = out_of_fold(inner, outputs, outputs, outer)[0]
    assert np.array_equal(rows, np.sort(np.union1d(outer[0].train, outer[0].val)))
    leaky = [replace(inner[0], train=np.union1d(inner[0].train, inner[0].oof[:1])), *inner[1:]]
    with pytest.raises(AssertionError, match="trained on a row it holds out"):
        out_of_fold(leaky, outputs, outputs, outer)


def test_stacking_and_blending_runs_score_a_meta_model(tmp_path):
    import json

    from runner.commands.cli import main

    run = tmp_path / "run"
    assert main(["train", "eval=kfold", "eval.k=3", "ensemble=stacking", "trainer.epochs=5", "trainer.progress=false",
                 f"hydra.run.dir={run}"]) == 0
    results = json.loads((run / "results.json").read_text())
    acc = results["ensembles"]["stacking"]["metrics"]["test/accuracy"]
    assert 0.5 < acc["mean"] <= 1 and acc["n"] == 3
    run = tmp_path / "blend"
    assert main(["train", "ensemble=blending", "dataset=diabetes", "trainer.epochs=5", "trainer.progress=false",
                 f"hydra.run.dir={run}"]) == 0
    results = json.loads((run / "results.json").read_text())
    blending = results["ensembles"]["blending"]
    assert "test/rmse" in blending["metrics"] and "holdout/rmse" in blending["holdout"]
    assert set(blending["meta_strength"]) <= {0.01, 0.1, 1.0, 10.0, 100.0}
    for name, d in results["ensembles"].items():  # every row of the table has its cost per row
        assert d["inference_s_per_row"] > 0 and d["parameters"] > 0


def test_blending_halves_are_disjoint_stratified_and_the_strength_is_the_hold_out_best():
    from runner.ensemble.stacking import STRENGTHS, fit_meta_on_holdout, halves
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    rows = np.sort(rng.choice(200, 120, replace=False))
    meta, held = halves(rows, y, seed=3, stratify=True)
    assert np.array_equal(np.sort(np.concatenate([meta, held])), rows) and not np.intersect1d(meta, held).size
    assert abs(y[meta].sum() - y[held].sum()) <= 1  # classes alternate between the halves
    assert not np.array_equal(halves(rows, y, seed=4, stratify=True)[0], meta)  # the member's own draw

    X = rng.normal(size=(200, 3)) + y[:, None] * 0.7
    strength, held_out, test = fit_meta_on_holdout("binary", ["0", "1"], "logreg", (X[meta], y[meta]),
                                                   (X[held], y[held]), X[:5])
    losses = {c: log_loss(y[held], LogisticRegression(C=c, max_iter=1000).fit(X[meta], y[meta]).predict_proba(X[held]),
                          labels=[0, 1]) for c in STRENGTHS}
    assert strength == min(losses, key=losses.get)
    best = LogisticRegression(C=strength, max_iter=1000).fit(X[meta], y[meta])
    np.testing.assert_allclose(held_out, best.predict_proba(X[held]), atol=1e-9)
    np.testing.assert_allclose(test, best.predict_proba(X[:5]), atol=1e-9)


def test_student_targets_are_the_ensembles_outputs():
    from runner.ensemble.distill import teacher_targets

    p = _probs(1, 40, 3)[0]
    y = np.random.default_rng(0).integers(0, 3, 40)
    np.testing.assert_allclose(teacher_targets(p, y, "ce", 1.0, 0.0), p)
    np.testing.assert_allclose(teacher_targets(p, y, "ce", 1.0, 1.0), np.eye(3)[y])
    np.testing.assert_allclose(teacher_targets(p[:, :2] / p[:, :2].sum(1, keepdims=True), y % 2, "bce", 1.0, 0.0),
                               p[:, 1] / p[:, :2].sum(1))
    soft = teacher_targets(p, y, "ce", 3.0, 0.0)
    entropy = lambda q: -(q * np.log(q)).sum(1)  # noqa: E731
    assert (entropy(soft) >= entropy(p) - 1e-12).all() and np.allclose(soft.sum(1), 1)


def test_distillation_trains_on_each_splits_mean_prediction(monkeypatch, compose):
    import runner.engine.stacking
    import runner.ensemble.distill as distill_module
    from runner.data import preprocess
    from runner.engine.predict import member_outputs
    from runner.fit import fit_population
    from runner.study import plan

    cfg = compose(["eval=kfold", "eval.k=3", "ensemble=distill", "trainer.seeds=2", "trainer.epochs=3",
                   "trainer.progress=false", "trainer.workers=1"])  # the loop in this process, where `seen` is
    study = plan(cfg)
    selected = fit_population(study, study.members, preprocess(study.dataset, study.members), None)
    seen = {}
    real_fit = runner.engine.stacking.fit  # the loop itself: the targets it trains on
    monkeypatch.setattr(runner.engine.stacking, "fit", lambda m, d, *a: seen.setdefault("soft", d.inputs.soft.clone())
                        is not None and real_fit(m, d, *a))
    table, cost = distill_module.distill(study, selected)
    everything = member_outputs(selected.model, selected.inputs, [np.arange(303)] * 6, study.loss)
    for split in range(3):  # members 2·split and 2·split+1 are the split's two seeds
        want = everything[2 * split : 2 * split + 2].mean(0)[:, 1] * 0.9 + 0.1 * study.dataset.y
        np.testing.assert_allclose(seen["soft"][split].numpy(), want, atol=1e-6)
    assert cost["parameters"] == 28 * 4 + 4 + 4 + 1 and len(table.member.unique()) == 3
