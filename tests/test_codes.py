"""Categorical columns as integer codes (dataset.encoding) for a module's embedding layers: the same codes in
training and predict, sklearn's OrdinalEncoder and SimpleImputer per member, cardinalities passed to the class."""

import copy
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from runner.commands.cli import main
from runner.data import make_transformer, population_plan, preprocess

QUICK = ["trainer.epochs=3", "trainer.progress=false", "plots=false"]

NETS = '''
import torch
from torch import nn


class Embedded(nn.Module):
    """Numeric columns as they come, each categorical code through an embedding of its own (the layout of
    rtdl's and tab-transformer's models: numeric first, then the codes)."""

    def __init__(self, input_shape, out_features, cat_cardinalities):
        super().__init__()
        self.n_cat = len(cat_cardinalities)
        self.embed = nn.ModuleList(nn.Embedding(c, 3) for c in cat_cardinalities)
        self.head = nn.Linear(input_shape[0] - self.n_cat + 3 * self.n_cat, out_features)

    def forward(self, x):
        num, cat = x[:, : x.shape[1] - self.n_cat], x[:, x.shape[1] - self.n_cat :].long()
        return self.head(torch.cat([num] + [e(cat[:, i]) for i, e in enumerate(self.embed)], 1))
'''


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "codenets.py").write_text(textwrap.dedent(NETS))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder


def _codes(dataset):
    out = copy.copy(dataset)
    out.codes = True
    return out


def test_codes_equal_sklearns_ordinal_encoder_with_each_members_imputation(heart, eval_cfg):
    heart = _codes(heart)
    members = population_plan(heart.y, heart.task, eval_cfg("kfold", k=5), [0])
    f = preprocess(heart, members)
    assert f.X.shape == (303, 13) and f.names == heart.numeric + heart.categorical
    assert heart.cardinalities == [len(heart.categories[c]) + 1 for c in heart.categorical]
    assert heart.features["ca"].isna().any()  # a missing code is imputed with the member's training mode
    for e, m in enumerate(members):
        want = make_transformer(heart).fit(heart.features.iloc[m.train]).transform(heart.features)
        np.testing.assert_allclose(f[e], want, rtol=1e-5, atol=1e-5)
        codes = f[e][:, len(heart.numeric):]
        assert np.array_equal(codes, codes.round()) and (codes >= 0).all()


def test_a_class_taking_cat_cardinalities_gets_codes_and_predict_codes_the_same_rows(package, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *QUICK, "model=module", "model.target=codenets:Embedded", "eval=kfold", "eval.k=3",
                 f"hydra.run.dir={run}"]) == 0
    err = capsys.readouterr().out
    assert "13 features (8 categorical as codes)" in " ".join(err.split())
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    cards = state["model_config"]["args"]["cat_cardinalities"]  # recorded: predict rebuilds the same embeddings
    assert cards == [3, 5, 3, 4, 3, 4, 5, 4]  # heart's categories per column, plus the unknown code
    # predict on the training file: the same codes, so each member's probabilities are the run's own
    data = tmp_path / "heart.csv"
    heart = pd.read_csv("data/heart.csv")
    heart.to_csv(data, index=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--data", str(data), "--out", str(out), "--model", "codenets:Embedded"]) == 0
    pred = pd.read_csv(out)
    scored = pd.read_csv(run / "predictions.csv")
    for member, rows in scored.groupby("member"):
        mine = pred.set_index("row").loc[rows["row"], f"m{member}.p_1"].to_numpy()
        np.testing.assert_allclose(mine, rows["p_1"].to_numpy(), atol=1e-5)
    # a category the run never saw: the unknown code, and one line that says so
    heart.loc[0, "thal"] = "not a thal"
    heart.to_csv(data, index=False)
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(data), "--out", str(out), "--model", "codenets:Embedded"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "column 'thal'" in err and "'not a thal'" in err and "unknown" in err


def test_codes_for_runners_own_mlp_are_one_line(tmp_path, capsys):
    assert main(["train", *QUICK, "dataset.encoding=codes", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset.encoding=codes" in err and "model=mlp" in err
