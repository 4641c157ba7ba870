"""The population contract: every registered model, and model=module on each of its paths, passes the same checks
(as scikit-learn runs its estimator checks over every estimator):

(a) stacked equals alone: each member trains beside the others, with every switch on, as it trains alone;
(b) resume equals unbroken: a fit stopped after an epoch and resumed ends bit for bit as one never stopped;
(c) `runner predict` on the training file gives each member's test predictions as the run scored them
    (image runs: predict reads tables only, and says so in one line);
(d) a bad value of the model's own keys is one line, exit status 2, before any run folder.

A new model joins by one entry in CASES (and, for (c) and (d), in SHELL and BAD)."""

import io
import json
import signal
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch

import runner.engine.stacking
from conftest import every_number, stop_after_first_epoch
from helpers import assert_member_equals_alone, assert_same_fit, fit_population, ragged_rows
from runner.commands.cli import main
from runner.config.schema import (AugConfig, AvgConfig, AvgName, Config, EarlyStoppingConfig, LossConfig,
                                  ModelConfig, Norm, OptimConfig, OptimName, SchedConfig, SchedName)
from runner.engine.resume import FitCheckpoint
from runner.errors import Interrupted
from runner.paths import bundled_data

SEEDS = [5, 1, 8]
TABLE_AUG = AugConfig(noise=0.05, mixup=0.2)
IMAGE_AUG = AugConfig(shift=1, flip=True, rotate=15, noise=0.1, mixup=0.4, cutmix=1.0)


@dataclass(frozen=True)
class Case:
    """One model (and path) with the switches it allows: the data it reads, its loss, its optimizer and schedule
    (spread over the cases so that each optimizer and schedule meets ragged members, early stopping and averages)."""

    model: ModelConfig
    images: bool = False
    loss: str = "bce"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name=OptimName.adam, lr=0.01))
    sched: SchedConfig = field(default_factory=lambda: SchedConfig(name=SchedName.cosine, warmup_steps=5))
    balance: float = 0.0  # model=moe's load-balancing term

    def config(self, switches: bool = True) -> Config:
        """Its config with every switch on: early stopping, every averaging, augmentation, label smoothing, an L2
        penalty, gradient clipping, a schedule with a warmup counted per member (ragged members step apart)."""
        cfg = Config(model=self.model, optim=self.optim, loss=LossConfig(balance=self.balance))
        cfg.trainer.epochs, cfg.trainer.batch_size = 5, 16
        cfg.trainer.early_stopping = EarlyStoppingConfig(patience=2)
        if switches:
            cfg.sched = self.sched
            cfg.avg = AvgConfig(name=AvgName.compare, k=2, ingredients=3, start_epoch=2)
            cfg.aug = IMAGE_AUG if self.images else TABLE_AUG
            cfg.reg.l2, cfg.trainer.grad_clip.norm = 1e-3, 1.0
            cfg.loss.label_smoothing = 0.1 if self.loss != "mse" else 0.0
        return cfg

    def fit(self, members: list[int], switches: bool = True, **fit_args):
        """`members` (positions in SEEDS) trained as one population, each on its own ragged rows and with its own
        standardization."""
        X, y, rows = _images() if self.images else _table(self.loss)
        seeds = [SEEDS[e] for e in members]
        ones = (1,) * (X.dim() - 1)
        shift = torch.tensor([(100.0 if self.images else 0.0) + 0.1 * s for s in seeds]).view(len(seeds), *ones)
        scale = torch.tensor([(60.0 if self.images else 1.0) + 0.05 * s for s in seeds]).view(len(seeds), *ones)
        return fit_population(self.config(switches), X, y, [rows[e] for e in members], seeds, self.loss,
                              shift=shift.expand(len(seeds), *X.shape[1:]).contiguous(),
                              scale=scale.expand(len(seeds), *X.shape[1:]).contiguous(), **fit_args)


def _table(loss: str):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 6, generator=g)
    score = X[:, 0] + X[:, 1] + 0.5 * torch.randn(60, generator=g)
    y = {"bce": (score > 0).float(), "ce": torch.bucketize(score, torch.tensor([-0.7, 0.7])).float(),
         "mse": score}[loss]
    return X, y, ragged_rows(60, len(SEEDS), train=36, val=12)


def _images():
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(48, 1, 6, 6, generator=g) * 255).to(torch.uint8)
    return X, torch.randint(0, 3, (48,), generator=g).float(), ragged_rows(48, len(SEEDS), train=34, val=12)


def _module(target: str, path: str = "auto") -> ModelConfig:
    return ModelConfig(name="module", target=f"usernets:{target}", path=path)


CASES = {
    "mlp": Case(ModelConfig(name="mlp", hidden=[16], dropout=0.3, norm=Norm.batch),
                sched=SchedConfig(name=SchedName.plateau, patience=1, factor=0.5, warmup_steps=4)),
    "logreg": Case(ModelConfig(name="logreg", hidden=[]), loss="ce",
                   optim=OptimConfig(name=OptimName.sgd, lr=0.05, momentum=0.9, nesterov=True),
                   sched=SchedConfig(name=SchedName.step, step_size=2, gamma=0.5)),
    "moe": Case(ModelConfig(name="moe", experts=3, expert=[8], top_k=2), loss="mse", balance=0.1,
                optim=OptimConfig(name=OptimName.adamw, lr=0.01, weight_decay=0.1),
                sched=SchedConfig(name=SchedName.warmup_cosine, warmup_epochs=2)),
    "cnn": Case(ModelConfig(name="cnn", channels=[4, 8], norm=Norm.batch, dropout=0.3), images=True, loss="ce"),
    "cnn-group": Case(ModelConfig(name="cnn", channels=[4, 8], norm=Norm.group, dropout=0.3), images=True, loss="ce",
                      optim=OptimConfig(name=OptimName.rmsprop, lr=0.005, momentum=0.5)),
    "cnn_vmap": Case(ModelConfig(name="cnn_vmap", channels=[4], dropout=0.3), images=True, loss="ce",
                     sched=SchedConfig(name=SchedName.onecycle, final_div_factor=1.0)),
    # model=module: a table module and an image module on each path (fast: stacked layer by layer; vmap: the
    # whole forward under vmap; loop: members in turn), and modules whose nodes the fast path runs stacked.
    "module-fast": Case(_module("Normed", "fast")),
    "module-vmap": Case(_module("Normed", "vmap"), sched=SchedConfig(name=SchedName.exponential, gamma=0.9)),
    "module-loop": Case(_module("Normed", "loop")),
    "module-fast-images": Case(_module("ConvNet", "fast"), images=True, loss="ce"),
    "module-vmap-images": Case(_module("ConvNet", "vmap"), images=True, loss="ce"),
    "module-loop-images": Case(_module("ConvNet", "loop"), images=True, loss="ce",
                               optim=OptimConfig(name=OptimName.adagrad, lr=0.05)),
    "module-stateful": Case(_module("Stateful"), optim=OptimConfig(name=OptimName.adamw, lr=0.01, weight_decay=0.1)),
    "module-random": Case(_module("Noisy"), loss="ce", optim=OptimConfig(name=OptimName.sgd, lr=0.05, momentum=0.9)),
    "module-sometimes": Case(_module("Sometimes"), optim=OptimConfig(name=OptimName.adam, lr=0.01)),
    "module-residual": Case(_module("Residual"), images=True, loss="ce"),
    "module-pooled": Case(_module("Pooled"), images=True, loss="ce"),
    "module-tutorial": Case(_module("Tutorial"), images=True, loss="ce"),  # the generic vmap path, chosen
}
TOLERANCE = 2e-5  # float32 sums in another order (a batch of 3 members, or of 1)


def _some(names, default: tuple[str, ...]):
    """`names` as parameters, those not in `default` marked slow (make test-slow runs them): the default suite runs
    a cheap subset of the contract."""
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _some(CASES, ("mlp", "logreg", "moe", "cnn", "cnn_vmap", "module-fast", "module-vmap",
                                             "module-loop", "module-loop-images", "module-tutorial",
                                             "module-stateful", "module-random")))
def test_stacked_equals_alone_with_every_switch_on(name):
    case = CASES[name]
    stacked = case.fit([0, 1, 2])
    for e in range(len(SEEDS)):
        assert_member_equals_alone(stacked, e, case.fit([e]), TOLERANCE)
    assert set(stacked.averages) == {"last", "best", "swa", "ema", "soup", "greedy_soup"}
    assert not torch.equal(stacked.last[0], stacked.last[1])


@pytest.mark.parametrize("name", _some(CASES, ("mlp", "cnn")))
def test_the_switches_move_the_weights(name):
    """(a)'s switches are on: without them the members end elsewhere."""
    case = CASES[name]
    assert (case.fit([0, 1, 2], switches=False).last - case.fit([0, 1, 2]).last).abs().max() > 1e-3


@pytest.mark.parametrize("name", _some(CASES, ("mlp", "cnn_vmap", "module-loop", "module-sometimes")))
def test_resumed_equals_unbroken_bit_for_bit(name, tmp_path):
    case = CASES[name]
    unbroken = case.fit([0, 1, 2])
    checkpoint = FitCheckpoint(tmp_path / "fit_state.pt", every=2)

    def ask_to_stop(epoch, active):
        if epoch == 1:  # every member trains at least patience + 1 epochs
            checkpoint.signal = signal.SIGTERM  # what the handler does on SIGTERM

    with pytest.raises(Interrupted):
        case.fit([0, 1, 2], on_epoch=ask_to_stop, checkpoint=checkpoint)
    assert torch.load(checkpoint.path, weights_only=True)["epoch"] == 1
    assert_same_fit(case.fit([0, 1, 2], checkpoint=FitCheckpoint(checkpoint.path, resume=True)), unbroken)


# (c), (b) from the shell, (d): each model from `runner train`, heart for tables, digits for images.
SHELL = {
    "mlp": ["model.dropout=0.2", "model.norm=batch", "avg=ema"],
    "logreg": ["model=logreg", "optim=sgd", "optim.lr=0.05"],
    "moe": ["model=moe", "model.experts=2", "model.top_k=1"],
    "cnn": ["model=cnn", "model.channels=[4]", "dataset=digits", "dataset.limit=120"],
    "cnn_vmap": ["model=cnn_vmap", "model.channels=[4]", "dataset=digits", "dataset.limit=120"],
    # trainer.stack fixed: results.json then holds no timings of the members-at-once measurement
    "module-fast": ["model=module", "model.target=usernets:Normed", "model.path=fast", "trainer.stack=2"],
    "module-vmap": ["model=module", "model.target=usernets:Normed", "model.path=vmap", "trainer.stack=2"],
    "module-loop": ["model=module", "model.target=usernets:Normed", "model.path=loop", "trainer.stack=1"],
    "module-stateful": ["model=module", "model.target=usernets:Stateful", "trainer.stack=2"],
    "module-random": ["model=module", "model.target=usernets:Noisy", "trainer.stack=2"],
}
BAD = {
    "mlp": ("model.dropout=1.5", "model.dropout=1.5 is not valid: use a probability in [0, 1)"),
    "logreg": ("model.hidden=[0]", "use positive widths"),
    "moe": ("model.top_k=3", "use 1..model.experts"),
    "cnn": ("model.kernel=2", "use an odd kernel size"),
    "cnn_vmap": ("model.channels=[]", "use positive channel counts"),
    "module-fast": ("model.target=usernets:Branchy", "cannot take the stacked fast path"),
    "module-vmap": ("model.target=usernets:Guarded", "cannot take the vmap path: vmap cannot run its forward"),
    "module-loop": ("model.path=sideways", "model.path: Invalid value 'sideways', expected one of [auto, fast, vmap,"),
    "module-stateful": ("model.path=fast", "cannot take the stacked fast path"),
    "module-random": ("model.path=vmap", "cannot take the vmap path: its forward draws random numbers"),
}
RUN = ["trainer.seeds=2", "trainer.epochs=3", "trainer.checkpoint_every=1", "trainer.progress=false", "plots=false"]


@pytest.mark.parametrize("name", _some(SHELL, ("module-loop", "cnn")))  # mlp's predict: test_predict.py too
def test_a_run_resumes_as_unbroken_and_predict_gives_its_test_predictions(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # train_command hands sys.argv to Hydra
    args = ["train", *SHELL[name], *RUN]
    assert main([*args, f"hydra.run.dir={tmp_path / 'unbroken'}"]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(runner.engine.stacking, "fit", stop_after_first_epoch(runner.engine.stacking.fit))
        assert main([*args, f"hydra.run.dir={tmp_path / 'stopped'}"]) == 130
    target = [a for a in SHELL[name] if a.startswith("model.target=")]  # a module run names its class again
    assert main(["resume", str(tmp_path / "stopped"), *target]) == 0
    unbroken, resumed = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("unbroken", "stopped"))
    assert every_number(resumed) == every_number(unbroken)

    capsys.readouterr()
    own = [f"--model={a.removeprefix('model.target=')}" for a in target]
    status = main(["predict", str(tmp_path / "unbroken"), "--data", str(bundled_data("heart.csv")), *own])
    out, err = capsys.readouterr()
    if "dataset=digits" in SHELL[name]:
        assert status == 2 and err.count("\n") == 1 and "runner predict reads tables (CSV) only" in err
        return
    assert status == 0, err
    table = pd.read_csv(io.StringIO(out)).set_index("row")
    scored = pd.read_csv(tmp_path / "unbroken" / "predictions.csv")
    test = scored[scored["split"] == "test"]
    assert set(test["member"]) == {0, 1}
    for member, rows in test.groupby("member"):
        np.testing.assert_allclose(table.loc[rows["row"], f"m{member}.p_1"], rows["p_1"], atol=1e-5)
        np.testing.assert_array_equal(table.loc[rows["row"], f"m{member}.pred"], rows["y_pred"])


@pytest.mark.parametrize("name", BAD)
def test_a_bad_value_is_one_line_and_exit_status_2(name, tmp_path, train):
    override, says = BAD[name]
    status, _, err = train(*SHELL[name], override, *RUN, f"hydra.run.dir={tmp_path / 'run'}")
    assert status == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "run").exists()
