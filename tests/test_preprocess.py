"""Per-member preprocessing: fit on training rows only, equal to sklearn's transformers, fixed width, rows stored once."""

from dataclasses import replace

import numpy as np
import pandas as pd

from runner.config.schema import DatasetConfig
from runner.data import load_dataset, make_transformer, population_plan, preprocess

NUMERIC = ["age", "trestbps", "chol", "thalch", "oldpeak"]


def test_heart_width_and_names(heart, eval_cfg):
    members = population_plan(heart.y, heart.task, eval_cfg("holdout"), [0, 1])
    f = preprocess(heart, members)
    assert f.X.shape == (303, 28) and f.X.dtype == np.float32 and len(f.names) == 28
    assert f.shift.shape == f.scale.shape == f.fill.shape == (2, 28)
    assert f.names[:7] == NUMERIC + ["sex=Female", "sex=Male"]
    assert f.names[-7:] == ["ca=0", "ca=1", "ca=2", "ca=3",
                            "thal=fixed defect", "thal=normal", "thal=reversable defect"]
    # Classification: y is the class codes for every member, unscaled.
    assert f.y.dtype == np.float32 and np.array_equal(f.y, heart.y.astype(np.float32))
    assert f.y_mean.tolist() == [0, 0] and f.y_scale.tolist() == [1, 1]


def test_changing_val_and_test_rows_leaves_training_rows_unchanged(heart, eval_cfg):
    member = population_plan(heart.y, heart.task, eval_cfg("holdout"), [0])[0]
    before = preprocess(heart, [member])[0]
    held_out = np.concatenate([member.val, member.test])
    changed = heart.features.copy()
    changed.loc[held_out, NUMERIC] = 1e4
    changed.loc[held_out[::2], "chol"] = np.nan
    changed.loc[held_out, "cp"] = "typical angina"
    changed.loc[held_out, ["ca", "thal"]] = np.nan
    after = preprocess(replace(heart, features=changed), [member])[0]
    assert np.array_equal(after[member.train], before[member.train])
    assert not np.allclose(after[held_out], before[held_out])  # the change was real


def test_statistics_are_the_training_rows(heart, eval_cfg):
    member = population_plan(heart.y, heart.task, eval_cfg("kfold", k=5), [0])[3]
    f = preprocess(heart, [member])
    X, train = f[0], heart.features.iloc[member.train]
    # Numeric: median-impute then standardize (ddof=0) with training-row statistics only.
    values = heart.features[NUMERIC].to_numpy()
    mean, sd = values[member.train].mean(0), values[member.train].std(0)  # heart has no missing numbers
    np.testing.assert_allclose(X[:, :5], (values - mean) / sd, rtol=1e-5, atol=1e-5)
    fitted = make_transformer(heart).fit(train)
    imputer, scaler = fitted.named_transformers_["numeric"].steps[0][1], fitted.named_transformers_["numeric"][-1]
    np.testing.assert_allclose(imputer.statistics_, np.median(values[member.train], axis=0))
    np.testing.assert_allclose(scaler.mean_, mean)
    # Categorical: a missing ca becomes the training rows' most frequent ca.
    mode = train["ca"].value_counts().idxmax()
    ca = X[:, f.names.index("ca=0"):f.names.index("ca=3") + 1]
    for row in np.flatnonzero(heart.features["ca"].isna()):
        assert ca[row].tolist() == [float(v == mode) for v in heart.categories["ca"]]
    assert np.all(X[:, 5:].sum(1) == 8)  # one hot per categorical column, for every row


def test_each_member_has_its_own_fit(heart, eval_cfg):
    members = population_plan(heart.y, heart.task, eval_cfg("kfold", k=5), [0, 1])
    f = preprocess(heart, members)
    X = np.stack([f[e] for e in range(len(members))])
    assert np.array_equal(X[0], X[1])  # two seeds of one fold share their rows, hence their fit
    assert not np.array_equal(X[0], X[2])  # another fold, other statistics
    for e, m in enumerate(members):
        np.testing.assert_allclose(X[e][m.train, :5].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(X[e][m.train, :5].std(0), 1, atol=1e-4)


def test_category_seen_only_in_test_rows_keeps_its_column(write_csv, eval_cfg):
    frame = pd.DataFrame({"x": range(20), "kind": ["a", "b"] * 9 + ["c", "c"], "label": [0, 1] * 10})
    ds = load_dataset(DatasetConfig(name="csv", path=write_csv(frame), target="label"))
    members = population_plan(ds.y, ds.task, eval_cfg("kfold", k=2, stratify=False, split_seed=1), [0])
    f = preprocess(ds, members)
    assert f.names == ["x", "kind=a", "kind=b", "kind=c"] and f.X.shape == (20, 4)
    for e, m in enumerate(members):
        # Rows "c" are one-hot in column kind=c for every member, whether or not training saw a "c".
        assert np.all(f[e][18:, 3] == 1) and np.all(f[e][:18, 3] == 0)
        assert f.used[e].tolist() == [True, True, True, bool(np.isin(m.train, [18, 19]).any())]


def test_regression_target_standardized_per_member(write_csv, eval_cfg):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=40), "label": rng.normal(5, 3, size=40)})
    ds = load_dataset(DatasetConfig(name="csv", path=write_csv(frame), target="label"))
    members = population_plan(ds.y, ds.task, eval_cfg("kfold", k=4), [0])
    f = preprocess(ds, members)
    for e, m in enumerate(members):
        assert f.y_mean[e] == ds.y[m.train].mean() and f.y_scale[e] == ds.y[m.train].std()
    assert f.y.dtype == np.float32 and np.array_equal(f.y, ds.y.astype(np.float32))
    assert len(set(f.y_mean.tolist())) == 4


def test_equals_sklearn_column_transformer_per_member(write_csv, eval_cfg):
    """Missing numbers and categories, a constant column and a mode tie: the fitted arrays reproduce sklearn."""
    rng = np.random.default_rng(3)
    n = 60
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n).astype(float), "const": 2.0,
                          "kind": rng.choice(["x", "y", "10", "2"], n), "label": rng.integers(0, 2, n)})
    frame.loc[rng.choice(n, 9, replace=False), "a"] = np.nan
    frame.loc[rng.choice(n, 7, replace=False), "kind"] = np.nan
    ds = load_dataset(DatasetConfig(name="csv", path=write_csv(frame), target="label", categorical=["kind"],
                                    keep=["const"]))
    members = population_plan(ds.y, ds.task, eval_cfg("kfold", k=5), [0])
    f = preprocess(ds, members)
    for e, m in enumerate(members):
        want = make_transformer(ds).fit(ds.features.iloc[m.train]).transform(ds.features)
        np.testing.assert_allclose(f[e], want, rtol=1e-5, atol=1e-5)


def test_the_engine_applies_the_same_preprocessing_as_standardize(write_csv, eval_cfg):
    """MemberInputs' fused x·(1/scale) - shift/scale on the device is Preprocessed.transform's map (standardize),
    missing values filled, within float32 rounding: kept whole ([E·n] rows) and gathered per batch alike."""
    import torch

    from runner.engine.inputs import MemberInputs

    rng = np.random.default_rng(5)
    n = 40
    frame = pd.DataFrame({"a": rng.normal(3, 2, n), "kind": rng.choice(["x", "y"], n), "label": rng.integers(0, 2, n)})
    frame.loc[rng.choice(n, 6, replace=False), "a"] = np.nan
    ds = load_dataset(DatasetConfig(name="csv", path=write_csv(frame), target="label", categorical=["kind"]))
    members = population_plan(ds.y, ds.task, eval_cfg("kfold", k=4), [0])
    pre = preprocess(ds, members)
    inputs = MemberInputs.from_preprocessed(pre, "cpu")
    idx = torch.arange(n).repeat(len(members), 1)
    whole = inputs.x(idx).numpy()
    inputs.dense = None
    gathered = inputs.x(idx).numpy()
    for e in range(len(members)):
        np.testing.assert_allclose(whole[e], pre.transform(e), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(gathered[e], pre.transform(e), rtol=1e-6, atol=1e-6)


def test_rows_are_stored_once_whatever_the_population_size(eval_cfg):
    """20k rows x 30 columns: the population's data memory at E=50 is close to E=1's, not 50 times it."""
    from runner.config.schema import Config
    from runner.data.dataset import Dataset
    from runner.engine.inputs import MemberInputs

    rng = np.random.default_rng(0)
    n, d = 20_000, 30
    frame = pd.DataFrame(rng.normal(size=(n, d)), columns=[f"x{i}" for i in range(d)])
    ds = Dataset(name="wide", target="y", task="binary", features=frame, y=rng.integers(0, 2, n),
                 classes=["0", "1"], numeric=list(frame.columns))
    sizes = {}
    for seeds in (1, 50):
        members = population_plan(ds.y, ds.task, eval_cfg("holdout"), list(range(seeds)))
        pre = preprocess(ds, members)
        sizes[seeds] = MemberInputs.from_preprocessed(pre, "cpu").nbytes()
    assert sizes[1] >= n * d * 4  # the rows themselves, float32
    assert sizes[50] / sizes[1] < 1.1, sizes
