"""`make bench`: runner's stacked engine side by side with the loops a user would write; a table and results.json."""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# As the `runner` command sets it before torch loads OpenMP (runner.commands.cli): idle workers sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import images as im  # noqa: E402
import sampled_ensemble as en  # noqa: E402
import sweeps as sw  # noqa: E402
import threads as th  # noqa: E402
import workloads as w  # noqa: E402
import zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNNER = Path(sys.executable).parent / "runner"
GIB = 1024  # MiB


def timed(label: str, fn, log: dict):
    """Call fn(), keeping its result; on failure record the error under `label` and return None."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001: a broken contender must not hide the others' numbers
        log.setdefault("errors", {})[label] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        return None


# Whole-process rows are judged as ratios to this reference, timed in the same loop: absolute
# seconds vary two-fold between machines (and with a busy neighbour), the ratio much less.
IMPORT_TORCH = [sys.executable, "-c", "import torch"]


def subprocess_s(args: list[str]) -> float:
    """Wall seconds of `runner ARGS` (or of a full command line) in a fresh process, output discarded."""
    runner = [str(RUNNER)] if RUNNER.exists() else [sys.executable, "-m", "runner.commands.cli"]
    cmd = args if args[0] == sys.executable else runner + args
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return seconds


def noise_probe() -> float:
    """Seconds of a fixed pure-Python loop: its spread across repetitions is how noisy the machine is."""
    start = time.perf_counter()
    total = 0
    for i in range(200_000):
        total += i
    return time.perf_counter() - start


def max_weight_diff(nets, result, members) -> list[float]:
    """Per listed member: the largest |plain net weight - runner's best weight|."""
    return [float((w.flat_of(nets[e]) - result.best[e]).abs().max()) for e in members]


def heart_kfold(args, out: dict) -> None:
    """Workload 1: 10 folds x 5 seeds on heart, runner's fit vs a plain loop vs sklearn."""
    study = w.heart_study(w.HEART_KFOLD + [f"trainer.epochs={args.epochs}"] + args.threads)
    out["threads"]["heart_kfold"] = torch.get_num_threads()
    times = {"runner": [], "plain": [], "sklearn": []}
    for _ in range(args.repeats):
        out["noise_s"].append(noise_probe())
        run = timed("heart-kfold runner", lambda: w.runner_fit(study), out)
        if run:
            times["runner"].append(run[0])
            _, result, model = run
        init = study.new_model()
        plain = timed("heart-kfold plain", lambda: w.plain_loop(study, init), out)
        if plain:
            times["plain"].append(plain[0])
        skl = timed("heart-kfold sklearn", lambda: w.sklearn_cv(study), out)
        if skl:
            times["sklearn"].append(skl[0])
    out["heart_kfold"] = r = {"times_s": times, "members": len(study.members)}
    if run:
        with torch.no_grad():
            model.flat.copy_(result.best)
        r["runner"] = {"epochs_mean": float(result.epochs_run.mean()), "epochs_loop": len(result.history["lr"]),
                       "accuracy": w.test_accuracy(study, lambda e, X: w.sequential(w.initial_state(model, e))(X))}
        r["flops"] = floor(study, result)
    if plain:
        _, nets, ran, best = plain
        r["plain"] = {"epochs_mean": float(ran.mean()), "accuracy": w.test_accuracy(study, lambda e, X: nets[e](X))}
    if run and plain:
        shown = [0, len(nets) // 3, len(nets) - 1]
        every = max_weight_diff(nets, result, range(len(nets)))
        r["match"] = {"members": shown, "max_abs_diff": [every[e] for e in shown],
                      "max_abs_diff_all": max(every), "median_abs_diff_all": float(np.median(every)),
                      "same_epochs": int((ran == result.epochs_run).sum()),
                      "same_best_epoch": int((best == result.best_epoch).sum())}
    if skl:
        r["sklearn"] = {"accuracy": skl[1], "epochs_mean": skl[2]}


def digits_cnn(args, out: dict) -> None:
    """Workload 2: digits, 5 folds x 2 seeds, CNN [16, 32], 20 epochs, batch 64: runner's stacked CNN (one
    grouped convolution) and its generic vmap path against the same 10 models one at a time."""
    extra = [*(["trainer.epochs=3"] if args.quick else []), *args.threads]
    study, pre = im.digits_study(w.compose_config, "cnn", extra)
    generic, generic_pre = im.digits_study(w.compose_config, "cnn_vmap", extra)
    times = {"runner": [], "vmap": [], "plain": []}
    accuracy = {}
    for _ in range(args.repeats):
        for name, fn in (("runner", lambda: im.runner_fit(study, pre)),
                         ("vmap", lambda: im.runner_fit(generic, generic_pre)),
                         ("plain", lambda: im.plain_loop(study, pre))):
            got = timed(f"digits-cnn {name}", fn, out)
            if got:
                times[name].append(got[0])
                accuracy[name] = {"mean": got[1], "ci95": im.interval(got[2])}
    out["threads"]["digits_cnn"] = torch.get_num_threads()
    out["digits_cnn"] = {"times_s": times, "accuracy": accuracy}


def own_module(args, out: dict) -> None:
    """Workload 5: the user's own modules (model=module) on the digits study: an nn.Sequential CNN, a residual CNN
    and a CNN with GroupNorm and a pixel mean, each on the stacked fast path and on the generic vmap path
    (model.path=vmap), against the same 10 models one at a time."""
    from runner.user_code import give

    extra = [*(["trainer.epochs=3"] if args.quick else []), *args.threads]
    cases = {"sequential": (im.UserCNN, []), "sequential_vmap": (im.UserCNN, ["model.path=vmap"]),
             "residual": (im.Residual, []), "residual_vmap": (im.Residual, ["model.path=vmap"]),
             "groupnorm": (im.GroupNormed, []), "groupnorm_vmap": (im.GroupNormed, ["model.path=vmap"])}
    studies = {name: im.digits_study(w.compose_config, "module", [f"model.target={give(cls)}", *more, *extra])
               for name, (cls, more) in cases.items()}
    times = {name: [] for name in [*cases, *(f"{n}_plain" for n in cases if not n.endswith("vmap"))]}
    accuracy = {}
    for _ in range(args.repeats):
        for name, (study, pre) in studies.items():
            contenders = [(name, lambda: im.runner_fit(study, pre))]
            if not name.endswith("vmap"):
                cls = cases[name][0]
                contenders.append((f"{name}_plain", lambda: im.plain_loop(study, pre, lambda k: cls((1, 8, 8), k))))
            for label, fn in contenders:
                got = timed(f"own-module {label}", fn, out)
                if got:
                    times[label].append(got[0])
                    accuracy[label] = {"mean": got[1], "ci95": im.interval(got[2])}
    out["threads"]["own_module"] = torch.get_num_threads()
    out["own_module"] = {"times_s": times, "accuracy": accuracy,
                         "paths": {name: study_path(study, pre) for name, (study, pre) in studies.items()}}


def study_path(study, pre) -> str:
    """The path model=module took for this study (the header's words)."""
    from runner.study import population

    return population(study, study.members[:1], pre)[0].path


def floor(study, result) -> dict:
    """Useful and executed FLOPs of the heart fit and the time they need at measured matmul rates."""
    E, d = len(study.members), study.pre.X.shape[-1]
    hidden = study.cfg.model.hidden[0]
    steps = int(np.ceil(max(len(m.train) for m in study.members) / study.cfg.trainer.batch_size))
    per_row = 2 * (d * hidden + hidden)
    rows_per_epoch = 3 * steps * study.cfg.trainer.batch_size + max(len(m.val) for m in study.members)
    # padded batches; a member leaves the population after the epoch it stops in
    executed = per_row * float(result.epochs_run.sum()) * rows_per_epoch
    threads = torch.get_num_threads()
    bmm = w.matmul_rate((E, study.cfg.trainer.batch_size, d, hidden))
    gemm = w.matmul_rate((1, 1024, 1024, 1024))
    torch.set_num_threads(os.cpu_count())
    gemm_all = w.matmul_rate((1, 1024, 1024, 1024))
    torch.set_num_threads(threads)
    useful = w.useful_flops(study, result)
    best = max(gemm, gemm_all)
    return {"useful": useful, "executed": float(executed), "threads": threads, "bmm_flop_s": bmm, "gemm_flop_s": gemm,
            "gemm_all_cores_flop_s": gemm_all, "floor_bmm_s": useful / bmm, "floor_gemm_s": useful / best}


def single_model(args, out: dict) -> None:
    """Workload 3: one MLP, holdout, no early stopping: runner's fit with E=1 vs the plain loop."""
    study = w.heart_study(w.SINGLE + [f"trainer.epochs={args.single_epochs}"] + args.threads)
    out["threads"]["single"] = torch.get_num_threads()
    times = {"runner": [], "plain": []}
    for _ in range(args.repeats):
        run = timed("single runner", lambda: w.runner_fit(study), out)
        if run:
            times["runner"].append(run[0])
        init = study.new_model()
        plain = timed("single plain", lambda: w.plain_loop(study, init), out)
        if plain:
            times["plain"].append(plain[0])
    out["single"] = r = {"times_s": times}
    if run and plain:
        r["max_abs_diff"] = max_weight_diff(plain[1], run[1], [0])[0]


def processes(args, out: dict) -> None:
    """Workloads 1 (end to end), 4 and the sweeps: `runner` commands timed as fresh processes, and the fit's peak RSS."""
    def train(*overrides):
        return ["train", *overrides, *args.threads]

    with tempfile.TemporaryDirectory() as tmp:
        sweep = [f"hydra.sweep.dir={tmp}/sweep", *(["trainer.epochs=10"] if args.quick else [])]
        commands = {
            "help": ["--help"],
            "cfg_job": ["train", "--cfg", "job"],
            "train_default": train(*(["trainer.epochs=10"] if args.quick else [])),
            "train_kfold": train(*w.HEART_KFOLD[:-1], f"trainer.epochs={args.epochs}"),
            "report_sweep": ["report", f"{tmp}/sweep"],
        }
        times = {k: [] for k in commands} | {"import_torch": [], "pairs": {k: [] for k in commands}}
        # The finished sweep that `runner report` reads: 3 optimizers x 2 seed counts, timed once as information.
        times["sweep"] = [t] if (t := timed("runner train -m (6 jobs)", lambda: subprocess_s(
            train("-m", "optim=sgd,adam,adamw", "trainer.seeds=1,2", *sweep)), out)) else []
        for rep in range(args.repeats):
            for name, cmd in commands.items():
                # The reference right before each command, so both meet the same load on a shared machine.
                ref = timed("import torch", lambda: subprocess_s(IMPORT_TORCH), out)
                run_dir = [f"hydra.run.dir={tmp}/{name}-{rep}"] if name.startswith("train_") else []
                t = timed(f"runner {name}", lambda: subprocess_s(cmd + run_dir), out)
                if ref is not None:
                    times["import_torch"].append(ref)
                if t is not None:
                    times[name].append(t)
                if ref is not None and t is not None:
                    times["pairs"][name].append(t / ref)
        sw.sweep_workload(args, out, Path(tmp), subprocess_s, timed)
        th.threads_workload(args, out, Path(tmp), subprocess_s, timed)
    out["processes"] = {"times_s": times}
    rss = timed("peak rss", lambda: subprocess.run([sys.executable, str(HERE / "workloads.py"), str(args.epochs)],
                                                   capture_output=True, text=True, check=True).stdout, out)
    if rss:
        out["rss_mib"] = json.loads(rss)


def torch_ratio(times: dict, name: str) -> float | None:
    """Median over repetitions of (seconds of `name`) / (seconds of the `import torch` timed just before it)."""
    if name == "sweep":  # run once, before the repetitions: against the median reference
        return times["sweep"][0] / med(times["import_torch"]) if times.get("sweep") and times["import_torch"] else None
    return med(times.get("pairs", {}).get(name, []))


def med(xs):
    """The median, or None for no measurements."""
    return statistics.median(xs) if xs else None


def table(out: dict, quick: bool) -> Table:
    """The benchmark table: one row per contender, medians, ratios to runner and the bars."""
    t = Table(title="runner benchmark" + (" (--quick: bars are not meaningful)" if quick else ""), title_justify="left")
    for col, just in [("workload", "left"), ("contender", "left"), ("median", "right"), ("min", "right"),
                      ("ratio", "right"), ("bar", "left"), ("", "center")]:
        t.add_column(col, justify=just, no_wrap=col in ("workload", "contender", "median", "min", "ratio"))

    def row(workload, contender, xs, ref=None, bar="", ok=None, unit="s", note=None, ratio=None):
        m = med(xs)
        if m is None and note is None and quick and "errors" not in out:
            note = "not in --quick"  # a contender the smoke run leaves out (joblib, the busy machine, ...)
        if note is not None or m is None:
            shown = f"n/a ({note})" if note else bar
            t.add_row(workload, contender, "" if note else "[red]error[/]", "", "", shown, "")
            return
        ratio = ratio or (f"{m / ref:.1f}x" if ref else "")
        verdict = "" if ok is None else ("[green]PASS[/]" if ok(m) else "[red]FAIL[/]")
        digits = 0 if unit == "MiB" else 3
        t.add_row(workload, contender, f"{m:.{digits}f} {unit}", f"{min(xs):.{digits}f} {unit}", ratio, bar, verdict)

    h = out.get("heart_kfold", {}).get("times_s", {})
    r = med(h.get("runner", []))
    row("heart-kfold", "runner fit, 50 stacked members", h.get("runner", []), r, "<= 2 s", lambda m: m <= 2)
    row("", "plain PyTorch loop, 1 model at a time", h.get("plain", []), r, "runner >= 15x faster",
        lambda m: r is not None and m / r >= 15)
    row("", "sklearn MLPClassifier, cross_validate", h.get("sklearn", []), r)
    lightning = w.lightning_available()
    row("", "PyTorch Lightning", [],
        note="not installed" if not lightning else f"{lightning} installed; no contender written yet")
    p = out.get("processes", {}).get("times_s", {})

    def process_row(workload, contender, name, most=None):
        """A whole command as a fresh process: seconds as information, judged as a ratio to `import torch`."""
        ratio = torch_ratio(p, name)
        bar = "" if most is None else f"<= {most}x import torch"
        row(workload, contender, p.get(name, []), None, bar, None if most is None else lambda m: ratio <= most,
            ratio="" if ratio is None else f"{ratio:.2f}x torch")

    process_row("", "runner train eval=kfold ..., end to end", "train_kfold", 2.5)
    d = out.get("digits_cnn", {}).get("times_s", {})
    r = med(d.get("runner", []))
    row("digits-cnn", "runner fit, 10 CNNs, one grouped conv", d.get("runner", []), r)
    row("", "runner fit, generic vmap path", d.get("vmap", []), r)
    row("", "plain PyTorch loop, 1 model at a time", d.get("plain", []), r, "runner >= 3x faster",
        lambda m: r is not None and m / r >= 3)
    o = out.get("own_module", {}).get("times_s", {})
    for name, label, bar, most, vmap_most in (
            ("sequential", "nn.Sequential CNN", "stacked >= 3x faster", 3, 2),
            ("residual", "residual CNN (add stacked)", "stacked >= 2x faster", 2, 2),
            ("groupnorm", "GroupNorm CNN with a pixel mean", "", None, None)):
        r, plain = med(o.get(name, [])), med(o.get(f"{name}_plain", []))
        row("own module" if name == "sequential" else "", f"model=module {label}", o.get(name, []), r)
        if f"{name}_vmap" in o:  # the generic path, judged against the plain loop
            v = med(o[f"{name}_vmap"])
            row("", "same module, model.path=vmap", o[f"{name}_vmap"], None,
                f"vmap >= {vmap_most}x faster" if vmap_most else "",
                None if vmap_most is None else (lambda m, p=plain, most=vmap_most: p is not None and p / m >= most),
                ratio=f"{plain / v:.1f}x faster" if plain and v else "")
        row("", "plain PyTorch loop, 1 model at a time", o.get(f"{name}_plain", []), r, bar,
            None if most is None else (lambda m, r=r, most=most: r is not None and m / r >= most))
    s = out.get("single", {}).get("times_s", {})
    plain = med(s.get("plain", []))
    single = med(s.get("runner", []))
    row("single model", "runner fit, E=1", s.get("runner", []), None, "<= 1.2x plain",
        lambda m: plain is not None and m / plain <= 1.2,
        ratio=f"{single / plain:.2f}x plain" if single and plain else "")
    row("", "plain PyTorch loop, 1 model", s.get("plain", []))
    row("startup", "python -c 'import torch' (the reference)", p.get("import_torch", []))
    process_row("", "runner --help", "help", 0.2)
    process_row("", "runner train --cfg job", "cfg_job")
    process_row("", "runner train (default), end to end", "train_default", 2.0)
    process_row("sweep", "runner train -m, 6 jobs (information)", "sweep")
    process_row("", "runner report on that sweep", "report_sweep", 1.5)
    zoo.rows(out, row, med)
    en.rows(out, row)
    sw.rows(out, row)
    th.rows(out, row)
    rss = out.get("rss_mib", {}).get("peak_mib")
    row("memory", "peak RSS of the heart-kfold fit", [rss] if rss else [], None, "<= 1 GiB",
        lambda m: m <= GIB, unit="MiB")
    return t


def details(out: dict) -> list[str]:
    """Lines under the table: the like-for-like check, epochs, accuracy, compute floor, noise."""
    h, lines = out.get("heart_kfold", {}), []
    if "match" in h:
        m = h["match"]
        shown = ", ".join(f"member {e}: {d:.1e}" for e, d in zip(m["members"], m["max_abs_diff"]))
        lines.append(f"like for like: plain loop vs runner best weights, max |dw|  {shown}; all {h['members']}: "
                     f"median {m['median_abs_diff_all']:.1e}, max {m['max_abs_diff_all']:.1e} (float32: a ReLU "
                     f"input within ~1e-6 of 0 can flip); same epochs run {m['same_epochs']}/{h['members']}, "
                     f"same best epoch {m['same_best_epoch']}/{h['members']}")
    if "max_abs_diff" in out.get("single", {}):
        lines.append(f"single model: plain vs runner best weights max |dw| {out['single']['max_abs_diff']:.1e}")
    parts = [f"{k} {h[k]['epochs_mean']:.1f} epochs, test acc {h[k]['accuracy']:.3f}"
             for k in ("runner", "plain", "sklearn") if k in h]
    if parts:
        lines.append("heart-kfold per member: " + "; ".join(parts) + " (sklearn: its own 20% validation, "
                     "early stopping on accuracy)")
    if "flops" in h:
        f, r = h["flops"], med(h["times_s"]["runner"])
        lines.append(f"compute floor: {f['useful'] / 1e9:.2f} GFLOP useful ({f['executed'] / 1e9:.2f} executed: "
                     f"padded batches); bmm [50,32,28]x[50,28,16] "
                     f"{f['bmm_flop_s'] / 1e9:.1f} GFLOP/s ({f['threads']} thread(s)) -> {f['floor_bmm_s']:.3f} s; "
                     f"GEMM 1024^3 {f['gemm_flop_s'] / 1e9:.1f} GFLOP/s ({f['threads']}), "
                     f"{f['gemm_all_cores_flop_s'] / 1e9:.1f} ({os.cpu_count()}) -> {f['floor_gemm_s']:.3f} s; "
                     f"runner fit is {r / f['floor_bmm_s']:.0f}x / {r / f['floor_gemm_s']:.0f}x those floors")
    acc = out.get("digits_cnn", {}).get("accuracy", {})
    if acc:
        lines.append("digits-cnn test accuracy, mean over the 10 members [95% CI]: " + "; ".join(
            f"{k} {v['mean']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for k, v in acc.items()))
    own = out.get("own_module", {})
    if own.get("accuracy"):
        lines.append("own-module paths: " + "; ".join(f"{k}: {v}" for k, v in own["paths"].items()))
        lines.append("own-module test accuracy, mean over the 10 members [95% CI]: " + "; ".join(
            f"{k} {v['mean']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for k, v in own["accuracy"].items()))
    if out.get("rss_mib"):
        q = out["rss_mib"]
        lines.append(f"RSS: {q['after_import_mib']:.0f} MiB after imports, {q['before_fit_mib']:.0f} before fit, "
                     f"{q['peak_mib']:.0f} peak")
    lines += sw.details(out)
    lines += zoo.details(out)
    lines += en.details(out)
    noise = out["noise_s"]
    if len(noise) > 1:
        lines.append(f"machine noise: a fixed Python loop varied {max(noise) / min(noise):.2f}x across repetitions")
    for label, err in out.get("errors", {}).items():
        lines.append(f"[red]error[/] {label}: {err}")
    return lines


def run_alone(name: str, args, out: dict) -> None:
    """Run workload `name` in a fresh process with this command's arguments; merge what it measured into `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "part.json"
        argv = [f"--repeats={args.repeats}", *(["--quick"] if args.quick else []),
                *([f"--threads={args.threads[0].split('=')[1]}"] if args.threads else [])]
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--workload", name,
                               f"--out={part}"])
        if not part.is_file():
            out.setdefault("errors", {})[name] = f"workload process exited {done.returncode} without results"
            return
        got = json.loads(part.read_text())
    out["noise_s"] += got.pop("noise_s")
    out["threads"] |= got.pop("threads")
    out.setdefault("errors", {}).update(got.pop("errors", {}))
    if not out["errors"]:
        del out["errors"]
    for key in ("machine", "args"):
        got.pop(key)
    out |= got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per contender; the median is shown")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, 10 epochs")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (trainer.threads); default: runner's choice")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--workload", choices=list(WORKLOADS), help="run only this workload (the bench runs "
                        "each in its own process, as the runner command would, so none inherits another's threads)")
    args = parser.parse_args()
    args.epochs, args.single_epochs = (10, 10) if args.quick else (100, 200)
    if args.quick:
        args.repeats = 1
    args.threads = [] if args.threads is None else [f"trainer.threads={args.threads}"]
    out = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                       "platform": platform.platform()},
           "args": {"repeats": args.repeats, "quick": args.quick, "threads": args.threads},
           "noise_s": [], "threads": {}}
    if args.workload:  # one workload in this process, for the bench's parent process
        WORKLOADS[args.workload](args, out)
        args.out.write_text(json.dumps(out))
        return 0
    console = Console(width=max(170, Console().width))  # piped output would wrap the table at 80
    start = time.perf_counter()
    for name in WORKLOADS:
        with console.status(f"bench: {name}"):
            run_alone(name, args, out)
    out["bench_s"] = time.perf_counter() - start
    console.print(table(out, args.quick))
    for line in details(out):
        console.print(line)
    threads = ", ".join(f"{k} {v}" for k, v in out.get("threads", {}).items())
    source = "--threads" if args.threads else "runner's choice"
    console.print(f"{out['bench_s']:.0f} s; torch {torch.__version__}, {os.cpu_count()} CPUs; threads ({source}, "
                  f"shared by every contender in a workload): {threads}; results in {args.out}")
    args.out.write_text(json.dumps(out, indent=1))
    return 1 if out.get("errors") else 0


WORKLOADS = {"heart-kfold": heart_kfold, "digits-cnn": digits_cnn, "own-module": own_module, "zoo": zoo.workload,
             "single model": single_model, "processes": processes, "sampled-ensemble": en.workload}


if __name__ == "__main__":
    sys.exit(main())
