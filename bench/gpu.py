"""`make bench-gpu`: runner's population engine beside the plain one-model-at-a-time PyTorch loop on one device.

Four workloads, each contender on the same device in one process, with peak device memory:
heart 10 folds x 5 seeds (MLP); heart with E = 50, 500, 5000 members (seconds per member-epoch as E grows);
digits CNN 5 folds x 2 seeds; a CIFAR-10-shaped CNN population (10 members, channels [32, 64, 128], batch 128) on
generated 32x32x3 images (no download: the bench needs no network). Under 5 minutes on one GPU;
`--device cpu --quick` is a smoke run of the same code on a CPU (bars are not judged then).
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the runner command sets it before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import images as im  # noqa: E402
import workloads as w  # noqa: E402

from runner.data import preprocess  # noqa: E402
from runner.study import plan  # noqa: E402

HERE = Path(__file__).resolve().parent
CIFAR_SHAPE, CIFAR_CLASSES = (32, 32, 3), 10


def measure(device: torch.device, fn):
    """(fn's result, peak device memory in MiB while it ran; None off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    got = fn()
    if device.type != "cuda":
        return got, None
    torch.cuda.synchronize()
    return got, torch.cuda.max_memory_allocated() / 2**20


class Bench:
    """The measurements of one run: rows of (workload, contender, seconds, member-epochs, peak MiB) and errors."""

    def __init__(self, args):
        self.args, self.device = args, torch.device(args.device)
        self.rows: list[dict] = []
        self.errors: dict[str, str] = {}
        self.notes: list[str] = []

    def overrides(self, runner_precision: bool = True) -> list[str]:
        extra = [f"trainer.device={self.args.device}", "trainer.progress=false"]
        return extra + ([f"trainer.precision={self.args.precision}"] if runner_precision else [])

    def run(self, workload: str, contender: str, fn, member_epochs=None) -> object:
        """Time `fn` -> (seconds, ...) and keep its row; a failure is recorded and the bench goes on."""
        try:
            got, peak = measure(self.device, fn)
        except Exception as exc:  # noqa: BLE001: one broken contender must not hide the others' numbers
            traceback.print_exc()
            self.errors[f"{workload}: {contender}"] = f"{type(exc).__name__}: {exc}"
            return None
        seconds = got[0]
        count = member_epochs(got) if callable(member_epochs) else member_epochs
        self.rows.append({"workload": workload, "contender": contender, "seconds": seconds,
                          "member_epochs": count, "peak_mib": peak})
        return got

    def seconds(self, workload: str, contender: str) -> float | None:
        return next((r["seconds"] for r in self.rows if r["workload"] == workload and r["contender"] == contender),
                    None)


def warm_up(b: Bench) -> None:
    """CUDA context, kernels and cuDNN handles before anything is timed."""
    study = w.heart_study(w.HEART_KFOLD + ["trainer.epochs=2", "trainer.seeds=1", *b.overrides()])
    w.runner_fit(study)
    w.plain_loop(dataclasses.replace(study, members=study.members[:2]), study.new_model(), b.device)
    if b.device.type == "cuda":
        net = im.plain_cnn([8], 10).to(b.device)
        net(torch.zeros(4, 1, 8, 8, device=b.device)).sum().backward()
        torch.cuda.synchronize()


def heart_kfold(b: Bench) -> None:
    """heart, 10 folds x 5 seeds, MLP [16]: `runner train eval=kfold eval.k=10 trainer.seeds=5`, early stopping on."""
    epochs = 5 if b.args.quick else 100
    study = w.heart_study(w.HEART_KFOLD + [f"trainer.epochs={epochs}", *b.overrides()])
    name = "heart 10x5 MLP"
    run = b.run(name, "runner fit, 50 stacked members", lambda: w.runner_fit(study),
                lambda got: float(got[1].epochs_run.sum()))
    init = study.new_model()
    plain = b.run(name, "plain PyTorch loop, 1 model at a time", lambda: w.plain_loop(study, init, b.device),
                  lambda got: float(got[2].sum()))
    if run and plain and b.args.precision == "32":
        diff = max(float((w.flat_of(net) - run[1].best[e]).abs().max()) for e, net in enumerate(plain[1]))
        same = int((plain[2] == run[1].epochs_run).sum())
        b.notes.append(f"heart 10x5 like for like: max |plain - runner| best weights {diff:.1e}, "
                       f"same epochs run {same}/{len(plain[1])}")


def heart_scaling(b: Bench) -> None:
    """heart with E = 50, 500, 5000 members (10 folds x 5, 50, 500 seeds), a fixed number of epochs each: how the
    time per member-epoch falls as the population grows; the plain loop's from 5 of the members."""
    epochs = 3 if b.args.quick else 20
    seeds = (5, 50) if b.args.quick else (5, 50, 500)
    fixed = w.HEART_KFOLD + [f"trainer.epochs={epochs}", "trainer.early_stopping.patience=null"]
    for s in seeds:
        study = w.heart_study(fixed + [f"trainer.seeds={s}", *b.overrides()])
        E = len(study.members)
        b.run("heart E scaling", f"runner fit, E={E}", lambda study=study: w.runner_fit(study), E * epochs)
        if s == seeds[0]:
            few = dataclasses.replace(study, members=study.members[:5])
            init = study.new_model()
            b.run("heart E scaling", "plain PyTorch loop, 5 members",
                  lambda few=few, init=init: w.plain_loop(few, init, b.device), 5 * epochs)


def digits_cnn(b: Bench) -> None:
    """digits, 5 folds x 2 seeds, CNN [16, 32], batch 64 (bench/images.py's study)."""
    extra = [*(["trainer.epochs=2"] if b.args.quick else []), *b.overrides()]
    study, pre = im.digits_study(w.compose_config, "cnn", extra)
    epochs = study.cfg.trainer.epochs
    b.run("digits CNN 5x2", "runner fit, 10 CNNs, one grouped conv", lambda: im.runner_fit(study, pre), 10 * epochs)
    b.run("digits CNN 5x2", "plain PyTorch loop, 1 model at a time", lambda: im.plain_loop(study, pre, device=b.device),
          10 * epochs)


def cifar_npz(folder: Path, rows: int, seed: int = 0) -> Path:
    """Generated images of CIFAR-10's shape: a fixed pattern per class under noise, so the models can learn."""
    g = np.random.default_rng(seed)
    patterns = g.normal(size=(CIFAR_CLASSES, *CIFAR_SHAPE))
    y = g.integers(0, CIFAR_CLASSES, rows)
    x = np.clip(128 + 30 * patterns[y] + 50 * g.normal(size=(rows, *CIFAR_SHAPE)), 0, 255).astype(np.uint8)
    path = folder / "cifar_shaped.npz"
    np.savez(path, x=x, y=y)
    return path


def cifar_cnn(b: Bench) -> None:
    """10 CNNs [32, 64, 128], batch 128, on 32x32x3 images (holdout, 10 seeds), no early stopping; runner in the
    bench's precision and in bf16 beside the plain float32 loop."""
    rows, epochs = (256, 1) if b.args.quick else (10_000, 3)
    name = "CIFAR-shaped CNN x10"
    with tempfile.TemporaryDirectory() as tmp:
        path = cifar_npz(Path(tmp), rows)
        base = ["dataset=images", f"dataset.path={path}", "model=cnn", "model.channels=[32,64,128]",
                "trainer.seeds=10", "trainer.batch_size=128", f"trainer.epochs={epochs}",
                "trainer.early_stopping.patience=1000"]

        def study_of(overrides):
            study = plan(w.compose_config([*base, *overrides]))
            return study, preprocess(study.dataset, study.members)

        study, pre = study_of(b.overrides())
        b.run(name, f"runner fit, precision={b.args.precision}", lambda: im.runner_fit(study, pre), 10 * epochs)
        if b.args.precision != "bf16":
            half, half_pre = study_of([*b.overrides(False), "trainer.precision=bf16"])
            b.run(name, "runner fit, precision=bf16", lambda: im.runner_fit(half, half_pre), 10 * epochs)
        channels = [32, 64, 128]
        b.run(name, "plain PyTorch loop, 1 model at a time",
              lambda: im.plain_loop(study, pre, lambda k: im.plain_cnn(channels, k, CIFAR_SHAPE[-1]), b.device),
              10 * epochs)


# (workload, runner contender, plain contender, the bar as text, test of plain/runner) on a GPU, full run only
BARS = [
    ("heart 10x5 MLP", "runner fit, 50 stacked members", "plain PyTorch loop, 1 model at a time",
     ">= 50x the plain loop", lambda ratio: ratio >= 50),
    ("CIFAR-shaped CNN x10", "runner fit, precision=32", "plain PyTorch loop, 1 model at a time",
     ">= 3x the plain loop", lambda ratio: ratio >= 3),
]


def table(b: Bench) -> Table:
    judged = b.device.type == "cuda" and not b.args.quick
    title = f"runner on {device_name(b.device)}" + ("" if judged else " (bars are judged on a GPU, full run only)")
    t = Table(title=title, title_justify="left")
    for col in ("workload", "contender", "seconds", "ms/member-epoch", "plain/runner", "peak MiB", "bar", ""):
        t.add_column(col, justify="left" if col in ("workload", "contender", "bar") else "right", no_wrap=True)
    plain = {r["workload"]: r for r in b.rows if r["contender"].startswith("plain")}
    shown = set()
    for r in b.rows:
        per = r["seconds"] / r["member_epochs"] * 1e3 if r["member_epochs"] else None
        ratio = ""
        p = plain.get(r["workload"])
        if p and not r["contender"].startswith("plain") and per and p["member_epochs"]:
            ratio = f"{p['seconds'] / p['member_epochs'] * 1e3 / per:.1f}x"
        bar, verdict = "", ""
        for workload, runner, plain_name, text, ok in BARS:
            if r["workload"] == workload and r["contender"] == runner:
                bar = text
                if judged and p and per:
                    verdict = "[green]PASS[/]" if ok(p["seconds"] / p["member_epochs"] * 1e3 / per) else "[red]FAIL[/]"
        if r["workload"] == "heart E scaling" and r["contender"].startswith("runner") and "E=5000" in r["contender"]:
            first = b.seconds("heart E scaling", "runner fit, E=50")
            bar = "<= 10x the E=50 fit's time" + (f" ({r['seconds'] / first:.1f}x)" if first else "")
            if judged and first:
                verdict = "[green]PASS[/]" if r["seconds"] / first <= 10 else "[red]FAIL[/]"
        t.add_row(r["workload"] if r["workload"] not in shown else "", r["contender"], f"{r['seconds']:.2f}",
                  f"{per:.3f}" if per else "", ratio, "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}", bar,
                  verdict)
        shown.add(r["workload"])
    return t


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{device.type} ({os.cpu_count()} CPUs)"


WORKLOADS = {"heart-kfold": heart_kfold, "heart-scaling": heart_scaling, "digits-cnn": digits_cnn,
             "cifar-cnn": cifar_cnn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device every contender runs on (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few epochs, small populations and data")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16-mixed"], help="runner's "
                        "trainer.precision (the plain loops stay float32; the CIFAR row adds bf16 beside 32)")
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS), help="only these (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE / "gpu_results.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: torch {torch.__version__} sees no CUDA device; run on a GPU machine "
              "with a CUDA build of torch, or use --device cpu --quick for a smoke run", file=sys.stderr)
        return 2
    b = Bench(args)
    console = Console(width=max(160, Console().width))  # piped output would wrap the table at 80
    start = time.perf_counter()
    warm_up(b)
    for name in args.workload or WORKLOADS:
        with console.status(f"bench-gpu: {name}"):
            WORKLOADS[name](b)
    total = time.perf_counter() - start
    console.print(table(b))
    for note in b.notes:
        console.print(note)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    console.print(f"{total:.0f} s in all; torch {torch.__version__}; TF32 matmul {tf32[0]}, cuDNN conv {tf32[1]}; "
                  f"results in {args.out}")
    for label, err in b.errors.items():
        console.print(f"[red]error[/] {label}: {err}")
    args.out.write_text(json.dumps({
        "machine": {"device": device_name(b.device), "torch": torch.__version__, "python": platform.python_version()},
        "args": {"device": args.device, "quick": args.quick, "precision": args.precision},
        "rows": b.rows, "notes": b.notes, "errors": b.errors, "total_s": total}, indent=1))
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
