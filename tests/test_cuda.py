"""On a CUDA device: stacked equals alone within the documented tolerance, bf16 trains, a GPU run predicts on a CPU.

Skipped where torch sees no CUDA device (the project's CI machines); run them on a GPU machine with
`pytest tests/test_cuda.py -m "slow or not slow"`.

Tolerance: with TF32 off (torch's default for matmuls; `torch.backends.cudnn.allow_tf32 = False` for
convolutions) the stacked population matches each member trained alone to 1e-4 after a few epochs: the batched
and the single kernels may sum in another order (cuBLAS/cuDNN pick algorithms by shape), so bit equality is not
promised; `torch.use_deterministic_algorithms(True)` makes repeated runs of one setup equal, not stacked and alone.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import fit_population
from runner.commands.cli import main
from runner.config.schema import (
    Config,
    EarlyStoppingConfig,
    ModelConfig,
    Norm,
    OptimConfig,
    OptimName,
    Precision,
    TrainerConfig,
)
from runner.engine.inputs import MemberInputs
from runner.engine.loop import fit
from runner.engine.rows import PopulationData
from runner.models import build_model
from runner.paths import bundled_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA_TOLERANCE = 1e-4


@pytest.fixture
def exact_float32():
    """TF32 off for convolutions too, for the test's duration."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _fit(members, rows, model_cfg, X, y, precision="32", device="cuda", outputs=1, loss="bce"):
    cfg = Config(model=model_cfg, optim=OptimConfig(name=OptimName.adam, lr=0.01),
                 trainer=TrainerConfig(epochs=5, batch_size=16, precision=Precision[precision],
                                       early_stopping=EarlyStoppingConfig(patience=2)))
    shape = (len(members), *X.shape[1:])
    return fit_population(cfg, X, y, rows, members, loss, outputs, shift=torch.full(shape, 0.5),
                          scale=torch.full(shape, 2.0), device=device)


def _rows(n, E, seed=0):
    g = np.random.default_rng(seed)
    out = []
    for e in range(E):
        perm = g.permutation(n)
        out.append((np.sort(perm[: n * 2 // 3 - e]), np.sort(perm[n * 2 // 3 :])))
    return out


@pytest.mark.parametrize("model_cfg", [ModelConfig(hidden=[16], norm=Norm.batch, dropout=0.2),
                                       ModelConfig(name="cnn", channels=[4, 8], norm=Norm.batch)],
                         ids=["mlp", "cnn"])
def test_cuda_stacked_equals_alone(model_cfg, exact_float32):
    g = torch.Generator().manual_seed(0)
    if model_cfg.name == "cnn":
        X, y, outputs, loss = (torch.rand(90, 1, 8, 8, generator=g) * 255).to(torch.uint8), \
            torch.randint(0, 3, (90,), generator=g).float(), 3, "ce"
    else:
        X, y, outputs, loss = torch.randn(90, 7, generator=g), (torch.rand(90, generator=g) > 0.5).float(), 1, "bce"
    seeds, rows = [3, 11, 0], _rows(90, 3)
    stacked = _fit(seeds, rows, model_cfg, X, y, outputs=outputs, loss=loss)
    for e, seed in enumerate(seeds):
        alone = _fit([seed], [rows[e]], model_cfg, X, y, outputs=outputs, loss=loss)
        torch.testing.assert_close(stacked.last[e], alone.last[0], atol=CUDA_TOLERANCE, rtol=0)
        assert stacked.epochs_run[e] == alone.epochs_run[0]


def test_cuda_matches_cpu(exact_float32):
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(90, 7, generator=g), (torch.rand(90, generator=g) > 0.5).float()
    seeds, rows = [1, 2], _rows(90, 2)
    gpu = _fit(seeds, rows, ModelConfig(hidden=[16]), X, y)
    cpu = _fit(seeds, rows, ModelConfig(hidden=[16]), X, y, device="cpu")
    torch.testing.assert_close(gpu.last.cpu(), cpu.last, atol=CUDA_TOLERANCE, rtol=0)


def test_cuda_bf16_trains_close_to_float32():
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(96, 6, generator=g), (torch.rand(96, generator=g) > 0.5).float()
    rows = _rows(96, 3)
    full = _fit([0, 1, 2], rows, ModelConfig(hidden=[16]), X, y)
    half = _fit([0, 1, 2], rows, ModelConfig(hidden=[16]), X, y, precision="bf16")
    assert half.last.dtype == torch.float32
    np.testing.assert_allclose(half.history["train/loss"], full.history["train/loss"], rtol=0.05)


def test_a_gpu_run_predicts_on_a_cpu(tmp_path, capsys, monkeypatch):
    """Trained on CUDA; `runner predict` on a machine without CUDA gives the run's own test predictions."""
    run = tmp_path / "run"
    assert main(["train", "trainer.device=cuda", "trainer.epochs=5", "trainer.progress=false", "plots=false",
                 "eval=kfold", "eval.k=3", f"hydra.run.dir={run}"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), "--data", str(bundled_data("heart.csv")), "--out", str(out)]) == 0
    ours, preds = pd.read_csv(out), pd.read_csv(run / "predictions.csv")
    test = preds[preds.split == "test"]
    for member, part in test.groupby("member"):
        np.testing.assert_allclose(ours.loc[part["row"].to_numpy(), f"m{member}.p_1"], part["p_1"], atol=1e-5)


def test_cuda_syncs_do_not_grow_with_the_steps():
    """torch's sync debug mode warns at every host synchronization: an epoch of 16 steps syncs as often as one
    of 4 (the step itself never waits for the GPU)."""
    import warnings

    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(64, 5, generator=g), (torch.rand(64, generator=g) > 0.5).float()
    counts = []
    for batch in (12, 3):  # 48 training rows
        cfg = Config(model=ModelConfig(hidden=[8], norm=Norm.batch, dropout=0.2),
                     optim=OptimConfig(name=OptimName.adam, lr=0.01),
                     trainer=TrainerConfig(epochs=1, batch_size=batch,
                                           early_stopping=EarlyStoppingConfig(patience=None)))
        model = build_model(cfg.model, 3, 5, 1).to("cuda")
        model.initialize([0, 1, 2], "default")
        inputs = MemberInputs.identity(X.cuda(), y.cuda(), 3)
        data = PopulationData(inputs, [np.arange(48)] * 3, [np.arange(48, 64)] * 3, [0, 1, 2])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fit(model, data, cfg, "bce")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(len(caught))
    assert counts[0] == counts[1]
