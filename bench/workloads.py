"""The benchmark's contenders: runner's stacked fit, a plain PyTorch loop, sklearn, and the compute floor."""

import json
import math
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from runner.config.schema import Config, register
from runner.data import Dataset, Preprocessed, make_transformer, preprocess
from runner.engine.loop import FitResult, fit
from runner.engine.rows import PopulationData
from runner.models import Population
from runner.paths import conf_dir
from runner.study import plan, population


HEART_KFOLD = ["eval=kfold", "eval.k=10", "trainer.seeds=5", "trainer.epochs=100"]
SINGLE = ["trainer.epochs=200", "trainer.early_stopping.patience=null"]


@dataclass
class Study:
    """One heart experiment wired exactly as runner.experiment.train does, up to (not including) `fit`."""

    cfg: Config
    dataset: Dataset
    members: list
    pre: Preprocessed
    data: PopulationData
    loss: str
    new_model: Callable[[], Population]  # a freshly initialized population each call

    def features(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member e's preprocessed inputs and targets of every row, as a plain loop would hold them."""
        return torch.from_numpy(self.pre[e]), torch.from_numpy(self.pre.y)


def heart_study(overrides: list[str]) -> Study:
    """The default experiment plus `overrides`, composed, planned and preprocessed as `runner train` does."""
    cfg = compose_config([*overrides, "trainer.progress=false"])
    study = plan(cfg)
    pre = preprocess(study.dataset, study.members)
    # runner picks its CPU thread count per population (in `population`); every in-process contender runs with it.
    _, data = population(study, study.members, pre)
    new_model = lambda: population(study, study.members, pre)[0]  # noqa: E731
    return Study(cfg, study.dataset, study.members, pre, data, study.loss, new_model)


def compose_config(overrides: list[str]) -> Config:
    """The typed Config that `runner train OVERRIDES` would run with (Hydra compose over conf/)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=overrides))


def runner_fit(study: Study) -> tuple[float, FitResult, Population]:
    """Wall seconds of one `fit` call on a fresh population (initialization not timed)."""
    model = study.new_model()
    start = time.perf_counter()
    result = fit(model, study.data, study.cfg, study.loss)
    return time.perf_counter() - start, result, model


def sequential(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """nn.Sequential(Linear, ReLU, Linear) holding `state` (one hidden layer, one logit)."""
    d, hidden = state["0.weight"].shape[1], state["0.weight"].shape[0]
    net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    net.load_state_dict(state)
    return net


def plain_member(X, y, train, val, seed, init, epochs, batch, patience, lr) -> tuple[nn.Module, int, int]:
    """What a user writes for one model: Adam, index batches, per-epoch validation, early stopping (on X's device)."""
    net = sequential(init).to(X.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    Xt, yt, Xv, yv = X[train], y[train], X[val], y[val]
    rng = np.random.default_rng(seed)  # runner's per-member shuffle stream, so the batches match
    best, best_state, best_epoch, wait = math.inf, None, -1, 0
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(train))).to(X.device)
        for i in range(0, len(train), batch):
            rows = order[i:i + batch]
            opt.zero_grad()
            loss_fn(net(Xt[rows]).squeeze(-1), yt[rows]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val_loss = loss_fn(net(Xv).squeeze(-1), yv).item()
        if val_loss < best:
            best, best_epoch, wait = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            wait += 1
            if patience is not None and wait >= patience:
                break
    net.load_state_dict(best_state)
    return net, epoch + 1, best_epoch


def initial_state(model: Population, e: int) -> dict[str, torch.Tensor]:
    """Member e's initial weights as an nn.Sequential(Linear, ReLU, Linear) state dict."""
    v = lambda name: model.view(name)[e].detach().clone()  # noqa: E731
    return {"0.weight": v("dense0.weight").T.contiguous(), "0.bias": v("dense0.bias").flatten(),
            "2.weight": v("dense1.weight").T.contiguous(), "2.bias": v("dense1.bias").flatten()}


def flat_of(net: nn.Module) -> torch.Tensor:
    """A plain net's weights in runner's flat layout (kernels stored [in, out])."""
    s = net.state_dict()
    return torch.cat([s["0.weight"].T.flatten(), s["0.bias"], s["2.weight"].T.flatten(), s["2.bias"]])


def plain_loop(study: Study, init_model: Population, device="cpu") -> tuple[float, list[nn.Module], np.ndarray,
                                                                            np.ndarray]:
    """Train every member one at a time from runner's initial weights; seconds, nets, epochs run, best epochs."""
    c = study.cfg
    inits = [initial_state(init_model, e) for e in range(len(study.members))]
    # preprocessed and on the device beforehand, not timed
    features = [tuple(t.to(device) for t in study.features(e)) for e in range(len(study.members))]
    start = time.perf_counter()
    nets, epochs = [], []
    for e, m in enumerate(study.members):
        net, ran, best = plain_member(*features[e], torch.from_numpy(m.train).to(device),
                                      torch.from_numpy(m.val).to(device),
                                      m.seed, inits[e], c.trainer.epochs, c.trainer.batch_size,
                                      c.trainer.early_stopping.patience, c.optim.lr)
        nets.append(net)
        epochs.append((ran, best))
    seconds = time.perf_counter() - start
    ran, best = np.array(epochs).T
    return seconds, nets, ran, best


@torch.no_grad()
def test_accuracy(study: Study, predict: Callable[[int, torch.Tensor], torch.Tensor]) -> float:
    """Mean over members of test accuracy, `predict(e, X_test)` giving logits."""
    accs = []
    for e, m in enumerate(study.members):
        rows = torch.from_numpy(m.test)
        X, y = study.features(e)
        logits = predict(e, X[rows]).flatten()
        accs.append(((logits > 0).float() == y[rows]).float().mean().item())
    return float(np.mean(accs))


def sklearn_cv(study: Study) -> tuple[float, float, float]:
    """sklearn MLPClassifier in cross_validate over the same folds, once per seed; seconds, accuracy, epochs."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_validate
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline

    c, ds = study.cfg, study.dataset
    start = time.perf_counter()
    scores, epochs = [], []
    for seed in sorted({m.seed for m in study.members}):
        # Train on the fold's non-test rows; sklearn carves its own 20% validation for early stopping.
        cv = [(np.sort(np.concatenate([m.train, m.val])), m.test) for m in study.members if m.seed == seed]
        mlp = MLPClassifier(hidden_layer_sizes=tuple(c.model.hidden), solver="adam", batch_size=c.trainer.batch_size,
                            max_iter=c.trainer.epochs, learning_rate_init=c.optim.lr, early_stopping=True,
                            validation_fraction=c.eval.val_fraction, n_iter_no_change=c.trainer.early_stopping.patience,
                            random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            out = cross_validate(make_pipeline(make_transformer(ds), mlp), ds.features, ds.y, cv=cv, n_jobs=1,
                                 return_estimator=True)
        scores += list(out["test_score"])
        epochs += [est[-1].n_iter_ for est in out["estimator"]]
    return time.perf_counter() - start, float(np.mean(scores)), float(np.mean(epochs))


def lightning_available() -> Optional[str]:
    """The importable Lightning package name, or None."""
    for name in ("lightning", "pytorch_lightning"):
        try:
            __import__(name)
            return name
        except ImportError:
            pass
    return None


def useful_flops(study: Study, result: FitResult) -> float:
    """Forward+backward (3x forward) matmul FLOPs over the rows each member trained, plus validation forwards."""
    widths = [study.pre.X.shape[-1], *study.cfg.model.hidden, 1]
    per_row = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    epochs = result.epochs_run
    n_train = np.array([len(m.train) for m in study.members])
    n_val = np.array([len(m.val) for m in study.members])
    return float(per_row * (3 * (n_train * epochs).sum() + (n_val * epochs).sum()))


def matmul_rate(shape: tuple[int, int, int, int], seconds: float = 0.3) -> float:
    """Measured FLOP/s of torch.bmm on [E, B, K] @ [E, K, N] (E=1 is a plain GEMM)."""
    E, B, K, N = shape
    a, b = torch.randn(E, B, K), torch.randn(E, K, N)
    torch.bmm(a, b)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            torch.bmm(a, b)
        calls += 10
    return 2 * E * B * K * N * calls / (time.perf_counter() - start)


def rss_child(epochs: int) -> dict:
    """Peak RSS (MiB) of a process that sets up and runs the heart k-fold fit; run in a fresh interpreter."""
    mib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731 (Linux reports KiB)
    after_import = mib()
    study = heart_study(HEART_KFOLD + [f"trainer.epochs={epochs}"])
    before_fit = mib()
    runner_fit(study)
    return {"after_import_mib": after_import, "before_fit_mib": before_fit, "peak_mib": mib()}


if __name__ == "__main__":
    print(json.dumps(rss_child(int(sys.argv[1]))))
