"""Mixture of experts: gates, the mixture in each task's output space, per-expert loss on the piecewise data
(stacked equals alone, resume, predict: test_contract.py)."""

import json

import pytest
import torch

from runner.commands.cli import main
from runner.config.schema import DatasetConfig, LossConfig, ModelConfig, MoeLoss
from runner.data import load_dataset
from runner.data.generated import piecewise
from runner.data.preprocess import restore
from runner.engine.losses import Criterion
from runner.models import build_model


def _moe(loss="mse", **kw):
    model = build_model(ModelConfig(name="moe", **kw), 3, (5,), 4 if loss == "ce" else 1, loss)
    model.initialize([0, 1, 2], "he")
    return model


@pytest.mark.parametrize("top_k", [None, 1, 2])
def test_gates_are_a_distribution_with_exactly_k_experts(top_k):
    model = _moe(experts=4, top_k=top_k)
    g = model.gates(torch.randn(3, 50, 5))
    assert (g >= 0).all() and (g <= 1).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(3, 50))
    assert ((g > 0).sum(-1) == (top_k or 4)).all()


@pytest.mark.parametrize("loss", ["mse", "ce", "bce"])
def test_the_mixture_is_taken_in_the_task_output_space(loss):
    model = _moe(loss, experts=3, expert=[6])
    x = torch.randn(3, 20, 5)
    g, out = model.gates(x), model.experts(x)
    assert out.shape == (3, 20, 3, 4 if loss == "ce" else 1)
    mixed = model(x)
    if loss == "mse":
        want = (g.unsqueeze(-1) * out).sum(2)
        torch.testing.assert_close(mixed, want)
    elif loss == "ce":
        want = (g.unsqueeze(-1) * torch.softmax(out, -1)).sum(2)
        torch.testing.assert_close(torch.softmax(mixed, -1), want)
    else:
        want = (g.unsqueeze(-1) * torch.sigmoid(out)).sum(2)
        torch.testing.assert_close(torch.sigmoid(mixed), want)


def test_per_expert_loss_is_the_gate_weighted_expert_losses():
    model = _moe(experts=3)
    x, y = torch.randn(3, 10, 5), torch.randn(3, 10)
    g, out = model.gates(x), model.experts(x)
    got = model.per_row_loss(Criterion("mse", LossConfig(), "cpu"), x, y, None)
    torch.testing.assert_close(got, (g * (out.squeeze(-1) - y.unsqueeze(-1)) ** 2).sum(-1))
    blended = model.per_row_loss(Criterion("mse", LossConfig(moe=MoeLoss.blended), "cpu"), x, y, None)
    torch.testing.assert_close(blended, ((g * out.squeeze(-1)).sum(-1) - y) ** 2)


@pytest.mark.slow  # over 4 s: the default suite stays under 5 minutes on 2 cores
def test_per_expert_experts_specialise_on_the_piecewise_regimes(tmp_path):
    """The lecture's example: two linear experts with the per-expert loss beat one linear model on test, and
    each expert takes most of the gate on its own regime."""
    common = ["dataset=piecewise", "trainer.epochs=300", "optim.lr=0.01", "trainer.progress=false"]
    runs = {}
    for name, model in (("moe", ["model=moe", "model.experts=2"]), ("linear", ["model=logreg"])):
        assert main(["train", *common, *model, f"hydra.run.dir={tmp_path / name}"]) == 0
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    moe_rmse = runs["moe"]["metrics"]["test/rmse"]
    assert moe_rmse["ci95"][1] < runs["linear"]["metrics"]["test/rmse"]["ci95"][0]

    state = torch.load(tmp_path / "moe" / "checkpoints" / "best.pt", weights_only=True)
    model = build_model(ModelConfig(**state["model_config"]), 1, state["input_shape"], 1, state["loss"])
    with torch.no_grad():
        model.flat.copy_(state["flat"])
    table = piecewise()
    pre = restore(load_dataset(DatasetConfig(name="piecewise", target="y", drop=["regime"])),
                  {k: v.numpy() for k, v in state["preprocessing"].items()})
    gates = model.gates(torch.from_numpy(pre.transform(0)).unsqueeze(0))[0].detach().numpy()
    regime = table["regime"].to_numpy()
    owner = [int(gates[regime == r].mean(0).argmax()) for r in (0, 1)]
    assert owner[0] != owner[1]  # a different expert for each regime ...
    for r in (0, 1):
        assert gates[regime == r, owner[r]].mean() > 0.5  # ... taking most of the gate on it
