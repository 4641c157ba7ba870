"""Your own nn.Module as a population (model=module), from the shell and from Python: it trains, the path it takes and
why, the fast path trains as the vmap path, its mistakes are one line, and predict rebuilds it only from the class
you name (stacked equals alone, resume and predict on every path: test_contract.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import runner
import runner.config.schema
from helpers import fit_population
from runner.commands.cli import main
from runner.config.schema import Config, EarlyStoppingConfig, ModelConfig, OptimConfig, OptimName
from runner.models import build_model
from runner.models.stacked import Step
from runner.paths import bundled_data

QUICK = ["trainer.epochs=4", "trainer.progress=false", "plots=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("own") / "run"
    assert main(["train", *QUICK, "model=module", "model.target=usernets:Net", "model.args.width=8",
                 "trainer.seeds=2", f"hydra.run.dir={run}"]) == 0
    return run


def test_a_users_module_trains_through_model_module_and_its_checkpoint_records_the_class(trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["model"] == "Net" and results["members"] == 2  # tables name the class
    assert results["parameters_per_member"] == 28 * 8 + 8 + 8 * 1 + 1  # heart's 28 features, width 8, one logit
    assert 0 <= results["metrics"]["test/accuracy"]["mean"] <= 1
    best = torch.load(trained / "checkpoints" / "best.pt", weights_only=True)
    assert best["model_config"]["target"] == "usernets:Net" and best["model_config"]["args"] == {"width": 8}


def test_predict_rebuilds_the_users_model_only_from_the_class_named(trained, capsys):
    data = str(bundled_data("heart.csv"))
    assert main(["predict", str(trained), "--data", data]) == 2
    assert "runner imports no code a run folder names" in capsys.readouterr().err
    assert main(["predict", str(trained), "--data", data, "--model", "usernets:Fixed"]) == 2
    assert "was trained with usernets:Net" in capsys.readouterr().err
    assert main(["predict", str(trained), "--data", data, "--model", "usernets:Net"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(table) == 303
    # The members' mean is the mean of the members' probabilities, each in [0, 1].
    np.testing.assert_allclose(table["mean.p_1"], (table["m0.p_1"] + table["m1.p_1"]) / 2, atol=1e-6)
    assert table["m0.p_1"].between(0, 1).all()


@pytest.mark.parametrize("override, says", [
    ("model.target=usernets:Nope", "usernets:Nope: Nope in usernets is nothing, not an nn.Module class"),
    ("model.target=nowhere.nets:Net", "cannot import nowhere.nets (ModuleNotFoundError"),
    ("model.args.widht=3", "Net(widht=3, input_shape=(28,), out_features=1) failed: TypeError"),
    ("model.target=usernets:Fixed", "Fixed() failed: TypeError"),
    ("model.target=usernets:Channelwise", "drop is Dropout1d; runner draws each member's masks for nn.Dropout only"),
])
def test_mistakes_with_a_users_module_are_one_line(tmp_path, capsys, override, says):
    status = main(["train", *QUICK, "model=module", "model.target=usernets:Net", override,
                   f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert status == 2 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_wrong_output_width_says_what_the_task_needs(tmp_path, capsys):
    status = main(["train", *QUICK, "model=module", "model.target=usernets:Fixed", "model.args={inputs: 28, "
                   "outputs: 3}", f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert status == 2 and "it returns [2, 3]; this task needs [2, 1]" in err


def _fit(X, y, rows, seeds, model_cfg, epochs=4, optim=None):
    """Each member on its own rows, early stopping on, members' preprocessing apart."""
    cfg = Config(model=model_cfg, optim=optim or OptimConfig(name=OptimName.adam, lr=0.01))
    cfg.trainer.epochs, cfg.trainer.batch_size = epochs, 16
    cfg.trainer.early_stopping = EarlyStoppingConfig(patience=2)
    ones = (1,) * (X.dim() - 1)
    shift = torch.tensor([0.1 * s for s in seeds]).view(len(seeds), *ones)
    scale = torch.tensor([1.0 + 0.05 * s for s in seeds]).view(len(seeds), *ones)
    return fit_population(cfg, X, y, rows, seeds, "ce", outputs=3, shift=shift, scale=scale)


@pytest.mark.parametrize("target, shape", [("usernets:Normed", (6,)), ("usernets:ConvNet", (1, 6, 6)),
                                           ("usernets:Residual", (1, 6, 6)), ("usernets:Pooled", (1, 6, 6))])
def test_the_fast_path_and_the_vmap_path_train_the_same_weights(target, shape):
    """The stacked fast path is only a faster way to run the same module: same initial weights, dropout masks,
    batch statistics, and so the same trained weights (float rounding apart: channels-last convolutions, torch's
    fused batch norm). Under SGD: Adam turns the rounding noise of a gradient that is 0 in exact arithmetic (a bias
    right before batch norm) into steps of up to lr, differently in each path's summation order."""
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(80, *shape, generator=g), torch.randint(0, 3, (80,), generator=g).float()
    rows = [(np.arange(0, 50), np.arange(50, 80)), (np.arange(5, 47), np.arange(50, 80))]
    sgd = OptimConfig(name=OptimName.sgd, lr=0.05, momentum=0.9)
    fast = _fit(X, y, rows, [3, 7], ModelConfig(name="module", target=target, path="fast"), optim=sgd)
    generic = _fit(X, y, rows, [3, 7], ModelConfig(name="module", target=target, path="vmap"), optim=sgd)
    torch.testing.assert_close(fast.last, generic.last, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.last_stats, generic.last_stats, atol=1e-5, rtol=0)
    assert (fast.last - fast.best).abs().max() > 0 or fast.epochs_run.min() > 0


@pytest.mark.parametrize("target, shape, path", [
    ("usernets:Net", (6,), "stacked fast path"),
    ("usernets:ConvNet", (1, 6, 6), "stacked fast path"),
    ("usernets:Residual", (1, 6, 6), "stacked fast path"),
    ("usernets:Pooled", (1, 6, 6), "stacked fast path; vmap for act"),
    ("usernets:Sized", (1, 6, 6), "generic vmap path: its forward computes with sizes or other values that are not "
                                  "activations (size)"),
    ("usernets:Branchy", (6,), "members in turn: its forward mixes a batch's rows"),  # x.sum() over the batch
    ("usernets:Guarded", (6,), "members in turn: vmap cannot run its forward (RuntimeError"),
    ("usernets:Moody", (6,), "generic vmap path: Moody's forward reads self.training (a trace would keep one "
                             "mode's branch)"),
])
def test_the_path_a_users_module_takes_and_why(target, shape, path):
    assert build_model(ModelConfig(name="module", target=target), 2, shape, 3).path.startswith(path)


@pytest.mark.slow  # two 30-epoch digits runs: 8 s
def test_a_users_sequential_cnn_matches_model_cnn_on_digits(tmp_path):
    common = ["dataset=digits", "eval=kfold", "eval.k=3", "trainer.epochs=30", "trainer.batch_size=64", "optim.lr=0.01",
              "trainer.progress=false", "plots=false"]
    assert main(["train", *common, "model=cnn", "model.channels=[16]", "model.norm=batch",
                 f"hydra.run.dir={tmp_path / 'cnn'}"]) == 0
    assert main(["train", *common, "model=module", "model.target=usernets:ConvNet", "model.args.channels=16",
                 f"hydra.run.dir={tmp_path / 'mine'}"]) == 0
    ours = json.loads((tmp_path / "cnn" / "results.json").read_text())["metrics"]["test/accuracy"]
    theirs = json.loads((tmp_path / "mine" / "results.json").read_text())["metrics"]["test/accuracy"]
    assert ours["ci95"][0] <= theirs["mean"] <= ours["ci95"][1], (ours, theirs)


def test_your_own_data_function_feeds_a_run_as_the_csv_and_image_rules_read_it(tmp_path, capsys):
    from runner.data.loading import load_dataset

    ds = load_dataset(runner.config.schema.DatasetConfig(name="python", loader="usernets:table", args={"n": 50}))
    assert list(ds.features.columns) == ["x0", "x1", "x2"] and ds.target == "y" and ds.task == "binary"
    import usernets

    X, y = usernets.table(50)
    np.testing.assert_array_equal(ds.features.to_numpy(), X)
    np.testing.assert_array_equal(ds.y, y)
    framed = load_dataset(runner.config.schema.DatasetConfig(name="python", loader="usernets:frame", target="label"))
    assert framed.categorical == ["color"] and framed.classes == ["no", "yes"]
    pictures = load_dataset(runner.config.schema.DatasetConfig(name="python", loader="usernets:pictures"))
    assert pictures.images.shape == (60, 1, 6, 6) and pictures.task == "multiclass"

    run = tmp_path / "run"
    assert main(["train", *QUICK, "dataset=python", "dataset.loader=usernets:table", "dataset.args.n=120",
                 f"hydra.run.dir={run}"]) == 0
    assert json.loads((run / "results.json").read_text())["over"] == "24 test rows"
    capsys.readouterr()
    assert main(["train", *QUICK, "dataset=python", "dataset.loader=usernets:frame", f"hydra.run.dir={run}2"]) == 2
    assert "dataset.target is not set; name the column of the table dataset.loader=usernets:frame returned" in capsys.readouterr().err
    assert main(["train", *QUICK, "dataset=python", "dataset.loader=usernets:Net", f"hydra.run.dir={run}3"]) == 2
    assert "calling it failed: TypeError" in capsys.readouterr().err

    from_python = runner.train(data=usernets.table, trainer={"epochs": 4, "progress": False}, plots=False,
                               dataset={"args": {"n": 120}}, run_dir=tmp_path / "py")
    assert from_python.results["metrics"] == json.loads((run / "results.json").read_text())["metrics"]


# Modules that exercise every kind of node the fast path runs stacked, and some it hands to vmap alone.
class Zoo1(nn.Module):  # strided, dilated, grouped conv, keepdim mean-centering, cat on -1, softmax
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 4, 3, padding="same", groups=2, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.sm = nn.Softmax(dim=1)
        self.ln = nn.LayerNorm([4, 4])
        self.lin = nn.Linear(4 * 4 * 4 * 2, out_features)
    def forward(self, x):
        x = F.relu(self.bn(self.b(self.a(x))))
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = self.ln(x)
        y = self.sm(x) * 2.0
        return self.lin(torch.flatten(torch.cat([x, y], -1), 1))

class Zoo2(nn.Module):  # sequence-like: Linear on [B, T, d], BN1d on [B, C, L], Conv1d (vmap node), sum over T
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.emb = nn.Linear(8, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(6, out_features)
    def forward(self, x):  # x [B, 2, 8, 8] -> treat as [B, 16, 8]
        x = x.flatten(1, 2)
        h = self.emb(x).transpose(1, 2)
        h = self.bn(self.conv(h)) + h
        return self.out(self.drop(torch.tanh(h)).sum(-1))

class Zoo3(nn.Module):  # avg pool, adaptive max, inplace relu, nested sequentials, sub/neg arithmetic
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.f = nn.Sequential(nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(inplace=True)), nn.AvgPool2d(2, ceil_mode=True), nn.Conv2d(3, 5, 3, padding=1), nn.GELU(), nn.AdaptiveMaxPool2d((2, 1)))
        self.g = nn.Linear(10, out_features)
    def forward(self, x):
        z = self.f(x)
        return self.g(F.relu(-z + 1.0).flatten(1))


@pytest.mark.parametrize("cls, path", [(Zoo1, "stacked fast path; vmap for sm"), (Zoo2, "stacked fast path; vmap for conv"),
                                       (Zoo3, "stacked fast path")])
def test_every_kind_of_node_runs_on_the_fast_path_as_on_the_vmap_path(cls, path):
    """Strided, dilated and grouped convolutions, batch/layer norm over several dimensions, centering by a
    kept-dimension mean, concatenation, softmax (through vmap), sequences [B, T, d] through Linear and
    BatchNorm1d, transposes, in-place ReLU, ceil-mode and adaptive pooling: outputs, gradients and batch
    statistics equal the whole-forward vmap path's."""
    target = runner.user_code.give(cls)
    x = torch.randn(3, 10, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    got = {}
    for how in ("auto", "vmap"):
        model = build_model(ModelConfig(name="module", target=target, path=how), 3, (2, 8, 8), 5)
        model.initialize([1, 2, 3], "default")
        model.train()
        out = model(x, step=Step(key=2))
        out.square().sum().backward()
        got[how] = out.detach(), model.flat.grad, model.stats, model.path
    assert got["auto"][3] == path
    for fast, generic in zip(got["auto"][:3], got["vmap"][:3]):
        torch.testing.assert_close(fast, generic, atol=2e-5, rtol=1e-5)
    assert got["auto"][1].abs().sum() > 0
