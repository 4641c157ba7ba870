"""Loading tables: the bundled heart file's known figures, type and task inference, column screening (stray
text in numbers, ID-like and constant columns, repeated names) and user errors."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from runner.config.schema import DatasetConfig
from runner.data import load_dataset
from runner.data.preprocess import feature_names
from runner.errors import RunnerError
from helpers import assert_one_line_errors
from runner.paths import bundled_data

HEART_NUMERIC = ["age", "trestbps", "chol", "thalch", "oldpeak"]
HEART_CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "slope", "ca", "thal"]
QUICK = ["trainer.epochs=2", "trainer.progress=false"]


def csv_cfg(path: str, target: str = "label", **kw) -> DatasetConfig:
    return DatasetConfig(name="csv", path=path, target=target, **kw)


def test_heart_file_known_figures():
    raw = pd.read_csv(bundled_data("heart.csv"))
    assert raw.shape == (303, 14)
    assert raw["num"].value_counts().sort_index().to_dict() == {0: 164, 1: 55, 2: 36, 3: 35, 4: 13}
    assert raw.isna().sum()[lambda s: s > 0].to_dict() == {"ca": 4, "thal": 2}


def test_heart_dataset(heart):
    assert (heart.name, heart.target, heart.task, heart.classes) == ("heart", "num", "binary", ["0", "1"])
    assert heart.y.dtype == np.int64 and heart.y.shape == (303,) and heart.y.sum() == 139
    assert heart.numeric == HEART_NUMERIC and heart.categorical == HEART_CATEGORICAL
    assert list(heart.features.columns) == [c for c in pd.read_csv(bundled_data("heart.csv")).columns if c != "num"]
    assert heart.features.index.tolist() == list(range(303))
    # ca is read as float (it has NaN); its domain must still read "0".."3", not "0.0".
    assert heart.categories["ca"] == ["0", "1", "2", "3"]
    assert heart.categories["fbs"] == ["False", "True"]
    assert heart.categories["thal"] == ["fixed defect", "normal", "reversable defect"]
    assert sum(len(v) for v in heart.categories.values()) == 23
    assert heart.features["ca"].isna().sum() == 4 and heart.features["thal"].isna().sum() == 2
    assert heart.features.loc[1, "ca"] == "3" and heart.features.loc[0, "fbs"] == "True"


def test_heart_inferred_without_lists():
    # The schema defaults (task auto, no role lists): num is a 5-class target, ca (float) numeric.
    ds = load_dataset(DatasetConfig(target="num"))
    assert ds.task == "multiclass" and ds.classes == ["0", "1", "2", "3", "4"]
    assert np.bincount(ds.y).tolist() == [164, 55, 36, 35, 13]
    assert ds.numeric == HEART_NUMERIC[:4] + ["oldpeak", "ca"]
    assert ds.categorical == ["sex", "cp", "fbs", "restecg", "exang", "slope", "thal"]


def test_binary_string_target(write_csv):
    frame = pd.DataFrame({"x": np.arange(12.0), "color": list("rgb") * 4, "label": ["yes", "no", "no"] * 4})
    ds = load_dataset(csv_cfg(write_csv(frame)))
    assert ds.task == "binary" and ds.classes == ["no", "yes"]
    assert ds.y.tolist() == [1, 0, 0] * 4
    assert ds.numeric == ["x"] and ds.categorical == ["color"] and ds.categories == {"color": ["b", "g", "r"]}


def test_multiclass_integer_and_string_targets(write_csv):
    frame = pd.DataFrame({"x": range(12), "label": [3, 1, 2, 10] * 3, "word": list("cabd") * 3})
    ds = load_dataset(csv_cfg(write_csv(frame), drop=["word"]))
    # LabelEncoder order is numeric order: 10 is the last class, not between 1 and 2.
    assert ds.task == "multiclass" and ds.classes == ["1", "2", "3", "10"]
    assert ds.y.tolist() == [2, 0, 1, 3] * 3 and list(ds.features.columns) == ["x"]
    ds = load_dataset(csv_cfg(write_csv(frame), target="word"))
    assert ds.classes == ["a", "b", "c", "d"] and ds.y.tolist() == [2, 0, 1, 3] * 3


def test_regression_targets(write_csv):
    frame = pd.DataFrame({"x": range(30), "label": np.linspace(0, 1, 30), "count": range(30)})
    ds = load_dataset(csv_cfg(write_csv(frame)))
    assert ds.task == "regression" and ds.classes == [] and ds.y.dtype == np.float64
    np.testing.assert_allclose(ds.y, np.linspace(0, 1, 30))
    # An integer target with more than 20 distinct values is a quantity, not labels.
    assert load_dataset(csv_cfg(write_csv(frame), target="count")).task == "regression"


def test_explicit_task_and_threshold_override_inference(write_csv):
    frame = pd.DataFrame({"x": range(12), "label": [0.5, 1.5, 2.5] * 4, "n": [0, 1, 2] * 4})
    ds = load_dataset(csv_cfg(write_csv(frame), task="multiclass"))
    assert ds.task == "multiclass" and ds.classes == ["0.5", "1.5", "2.5"] and ds.y.tolist() == [0, 1, 2] * 4
    assert load_dataset(csv_cfg(write_csv(frame), target="n", task="regression")).task == "regression"
    ds = load_dataset(csv_cfg(write_csv(frame), positive_above=1.0))
    assert ds.task == "binary" and ds.classes == ["0", "1"] and ds.y.tolist() == [0, 1, 1] * 4


def test_boolean_target_and_role_overrides(write_csv):
    frame = pd.DataFrame({"code": [1, 2, np.nan, 10] * 3, "size": range(12), "label": [True, False, False] * 4})
    ds = load_dataset(csv_cfg(write_csv(frame), categorical=["code"]))
    assert ds.task == "binary" and ds.classes == ["False", "True"] and ds.y.tolist() == [1, 0, 0] * 4
    assert ds.categorical == ["code"] and ds.numeric == ["size"]
    assert ds.categories["code"] == ["1", "2", "10"]
    code = ds.features["code"]
    assert code.tolist()[:2] == ["1", "2"] and code.isna().tolist() == [False, False, True, False] * 3
    ds = load_dataset(csv_cfg(write_csv(frame), numeric=["code"], categorical=["size"]))
    assert ds.numeric == ["code"] and ds.categorical == ["size"] and ds.features["code"].dtype == np.float64


def _errors(write_csv):
    good = pd.DataFrame({"a": range(12), "b": list("xy") * 6, "label": [0, 1, 2] * 4})
    path = write_csv(good)
    return [
        (csv_cfg(path + ".missing"), "does not exist"),
        (DatasetConfig(name="nosuch"), "dataset.name='nosuch' has no bundled file (bundled: heart"),
        (csv_cfg(write_csv(pd.DataFrame(), "empty.csv")), "is empty"),
        (csv_cfg(write_csv(good.head(7), "short.csv")), "short.csv has 7 data rows; runner needs at least 10"),
        (csv_cfg(path, target="y"), "dataset.target='y' is not a column of data.csv; columns are: a, b, label"),
        (csv_cfg(path, categorical=["c"]), "dataset.categorical lists 'c', not columns of data.csv"),
        (csv_cfg(path, drop=["zz"]), "dataset.drop lists 'zz'"),
        (csv_cfg(path, numeric=["a"], categorical=["a"]), "'a' listed in both dataset.numeric and dataset.categorical"),
        (csv_cfg(path, numeric=["label"]), "dataset.target='label' is also listed in dataset.numeric"),
        (csv_cfg(path, numeric=["b"]), "dataset.numeric lists 'b' but it holds non-numbers in data.csv: 12 of 12 "
         "cells: 'x' (line 2), 'y' (line 3), 'x' (line 4), 'y' (line 5), 'x' (line 6) and 7 more; clean those cells "
         "in the file, or move it to dataset.categorical"),
        (csv_cfg(write_csv(good.assign(a=["1", "?"] * 6), "stray.csv"), numeric=["a"]),
         "6 of 12 cells: '?' (line 3), '?' (line 5), '?' (line 7), '?' (line 9), '?' (line 11) and 1 more; clean "
         "those cells in the file, read them as missing with \"dataset.na_values=['?']\", or move it to "
         "dataset.categorical"),
        (csv_cfg(write_csv(good.assign(label=[*range(11), "x"]), "typo_y.csv")),
         "the target 'label' of typo_y.csv holds numbers but for 1 of 12 cells: 'x' (line 13); fix or remove those "
         "rows, or set dataset.task=multiclass"),
        (csv_cfg(path, keep=["zz"]), "dataset.keep lists 'zz', not columns of data.csv"),
        (csv_cfg(path, keep=["label"]), "dataset.target='label' is also listed in dataset.keep"),
        (csv_cfg(path, keep=["a"], drop=["a"]), "'a' listed in both dataset.keep and dataset.drop"),
        (csv_cfg(write_csv(good.assign(a=5, b=[f"r{i}" for i in range(12)]), "nothing.csv")),
         "no feature column of nothing.csv besides the target 'label' carries anything to learn from: a (one value), "
         "b (text, unique per row) (train on them anyway with dataset.keep=[a,b])"),
        (csv_cfg(write_csv(good.assign(label=7), "one.csv")), "the target 'label' has one class ('7') in one.csv"),
        (csv_cfg(path, positive_above=5), "the target 'label' has one class ('0')"),
        (csv_cfg(write_csv(good.assign(label=[1, None, None] * 4), "gaps.csv")),
         "8 rows of gaps.csv have no value in the target column 'label'"),
        (csv_cfg(path, target="b", task="regression"), "dataset.task=regression needs a numeric target; 'b' holds 'x'"),
        (csv_cfg(path, task="binary"), "dataset.task=binary but the target 'label' has 3 classes"),
        (csv_cfg(path, target="b", positive_above=0), "dataset.positive_above=0 needs a numeric target"),
        (csv_cfg(path, task="regression", positive_above=0), "but dataset.task=regression"),
        (csv_cfg(path, drop=["a", "b"]), "no feature columns besides the target 'label'"),
        (csv_cfg(write_csv(good.assign(b=None), "blank.csv")),
         "'b' in blank.csv has no values (add it to dataset.drop)"),
    ]


def test_user_errors_are_one_line_runner_errors(write_csv):
    assert_one_line_errors(_errors(write_csv), load_dataset)


def test_unparseable_file(write_csv, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n1,2\n" + b"\xff\xfe,\x00\n" * 12)
    with pytest.raises(RunnerError, match="cannot read dataset file .*bad.csv") as info:
        load_dataset(csv_cfg(str(path), target="a"))
    assert "\n" not in str(info.value)


def test_bundled_tables_keep_their_columns(heart):
    # 5 numeric + 23 one-hot categories; nothing in heart, diabetes or piecewise looks empty of signal.
    assert len(feature_names(heart)) == 28 and heart.dropped == {} and heart.dropped_note() == ""
    inferred = load_dataset(DatasetConfig(target="num"))
    assert len(feature_names(inferred)) == 6 + 19 and inferred.dropped == {}
    diabetes = load_dataset(DatasetConfig(name="diabetes", target="progression"))
    assert diabetes.numeric == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert diabetes.categorical == [] and diabetes.dropped == {}
    piecewise = load_dataset(DatasetConfig(name="piecewise", target="y", drop=["regime"]))
    assert list(piecewise.features.columns) == ["x"] and piecewise.dropped == {}


def test_numbers_with_a_few_text_cells_are_refused_naming_the_cells_and_the_fix(tmp_path, write_csv, train):
    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, 60).round(1)
    cells = x.astype(object)
    cells[[5, 17, 40]] = ["12a", "n/a?", "—"]
    path = write_csv(pd.DataFrame({"x": cells, "z": rng.normal(size=60), "label": (x > 50).astype(int)}), "typos.csv")
    args = ["dataset=csv", f"dataset.path={path}", "dataset.target=label", *QUICK]
    status, _, err = train(*args, f"hydra.run.dir={tmp_path}/run")
    assert status == 2 and err == (
        "error: column 'x' of typos.csv holds numbers but for 3 of 60 cells: '12a' (line 7), 'n/a?' (line 19), "
        "'—' (line 42); clean those cells in the file, read them as missing with "
        "\"dataset.na_values=['12a','n/a?','—']\", or read it as text with dataset.categorical=[x]\n")
    assert not (tmp_path / "run").exists()
    # The override the message names is one Hydra reads: x trains as one numeric feature, 3 cells imputed.
    fix = re.search(r'"(dataset\.na_values=.*?)"', err)[1]
    status, out, err = train(*args, fix, f"hydra.run.dir={tmp_path}/fixed")
    assert status == 0 and "typos: 60 rows, 2 features" in " ".join(out.split()), out + err
    best = torch.load(tmp_path / "fixed" / "checkpoints" / "best.pt", weights_only=True)
    assert best["features"] == ["x", "z"]
    ds = load_dataset(csv_cfg(path, na_values=["12a", "n/a?", "—"]))
    assert ds.features["x"].isna().sum() == 3 and np.nanmean(ds.features["x"]) == pytest.approx(
        np.delete(x, [5, 17, 40]).mean())
    # Declared text, the column is read as the user says.
    assert "x" in load_dataset(csv_cfg(path, categorical=["x"])).categorical


def test_id_like_and_constant_columns_are_dropped_and_the_header_names_them(tmp_path, write_csv, train):
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    frame = pd.DataFrame({"name": [f"person{i}" for i in range(60)], "x": x, "const": 7, "z": rng.normal(size=60),
                          "unit[/kg]": "kg", "label": (x > 0).astype(int)})
    path = write_csv(frame, "ids.csv")
    status, out, err = train("dataset=csv", f"dataset.path={path}", "dataset.target=label", *QUICK,
                             f"hydra.run.dir={tmp_path}/run")
    assert status == 0, err
    assert ("ids: 60 rows, 2 features, binary (positive class: 1) · dropped: name (text, unique per row), "
            "const (one value), unit[/kg] (one value) · mlp:") in " ".join(out.split())
    assert torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["features"] == ["x", "z"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["dropped"] == {
        "name": "text, unique per row", "const": "one value", "unit[/kg]": "one value"}
    ds = load_dataset(csv_cfg(path))
    assert ds.dropped == {"name": "text, unique per row", "const": "one value", "unit[/kg]": "one value"}
    # dataset.drop still drops (and is the user's, not reported); keep and typed declarations win.
    assert load_dataset(csv_cfg(path, drop=["const", "name"])).dropped == {"unit[/kg]": "one value"}
    kept = load_dataset(csv_cfg(path, keep=["name"], numeric=["const"]))
    assert kept.dropped == {"unit[/kg]": "one value"} and kept.numeric == ["x", "const", "z"]
    assert len(kept.categories["name"]) == 60 and len(feature_names(kept)) == 63
    assert load_dataset(csv_cfg(path, categorical=["name", "unit[/kg]"])).dropped == {"const": "one value"}


def test_screening_rule_boundaries(write_csv):
    rng = np.random.default_rng(2)
    n = 60
    frame = pd.DataFrame({
        "coded": [1, 2, 3, 4] * 14 + ["?"] * 4,  # 93% numbers, but 4 distinct: a code, kept as text
        "town": rng.choice([f"t{i}" for i in range(12)], n),  # 12 levels in 60 rows repeat: a category
        "flag": [1.0, np.nan] * 30,  # one value and blanks: constant once imputed
        "note": [f"n{i}" if i < 40 else None for i in range(n)],  # 40 distinct in 40 filled cells
        "label": [0, 1] * 30})
    frame.loc[:3, "note"] = "same"
    ds = load_dataset(csv_cfg(write_csv(frame)))
    assert ds.categorical == ["coded", "town"] and ds.categories["coded"] == ["1", "2", "3", "4", "?"]
    assert ds.dropped == {"flag": "one value and blanks", "note": "text, 37 values in 40 rows"}
    # The target is never screened away: a text label unique per row is the user's (odd) choice.
    target = load_dataset(csv_cfg(write_csv(frame.assign(label=[f"r{i}" for i in range(n)]))))
    assert target.target == "label" and len(target.classes) == n and "label" not in target.dropped


def test_repeated_column_names_are_refused(tmp_path, write_csv, train):
    frame = pd.DataFrame(np.arange(48).reshape(12, 4) % 5, columns=["a", "b", "a", "label"])
    path = write_csv(frame, "dup.csv")
    status, _, err = train("dataset=csv", f"dataset.path={path}", "dataset.target=label", *QUICK,
                           f"hydra.run.dir={tmp_path}/run")
    assert status == 2 and err == ("error: column name 'a' appears 2 times in the header of dup.csv (columns 1, 3); "
                                   "rename all but one of them in the file\n")
    assert not (tmp_path / "run").exists()
