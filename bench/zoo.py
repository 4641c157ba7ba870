"""The model-zoo workload: modules nobody here wrote (an LSTM, rtdl's ResNet and FT-Transformer, a ResNet-18 layout
on 32x32 images) through model=module, each beside the same members trained one at a time in a plain loop.

Each contender runs in a process of its own (`python bench/zoo.py --case NAME --kind runner|one|plain`), so its peak
memory is its own; both plan the same study (runner's splits and preprocessing) and time only their training.
Runner takes the CPU threads and worker processes it chooses; where it trains in workers, it also runs in one
process (`one`: trainer.workers=1), so the table shows what stacking gives on one core and what the workers add.
Peak memory is the largest proportional set size (PSS: a page shared by k processes counts 1/k in each) of the
contender and its workers together, sampled every 10 ms, beside the process's own peak resident size. It is
measured in a run of its own (`--memory`, once per contender, untimed): reading a process's PSS costs the kernel
1.2 ms, so the sampling took a tenth of a core per process, and with two workers a third of the cores their
training had (the rtdl ResNet's 5 folds: 1.02 s sampled, 0.70 s not). The plain loop runs with one thread and
with one per core (`--threads N`), and the faster of the two is its time: whichever a user of the plain loop
would pick.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class LSTMNet(nn.Module):
    """A row's features read as a sequence by an LSTM: no batching rule, so runner runs its members in turn."""

    def __init__(self, input_shape, out_features):
        super().__init__()
        self.rnn = nn.LSTM(1, 32, batch_first=True)
        self.head = nn.Linear(32, out_features)

    def forward(self, x):
        out, _ = self.rnn(x.unsqueeze(-1))
        return self.head(out[:, -1])


class RtdlResNet(nn.Module):
    def __init__(self, input_shape, out_features):
        import rtdl_revisiting_models as rtdl

        super().__init__()
        self.net = rtdl.ResNet(d_in=input_shape[0], d_out=out_features, n_blocks=2, d_block=64, d_hidden=None,
                               d_hidden_multiplier=2.0, dropout1=0.1, dropout2=0.0)

    def forward(self, x):
        return self.net(x)


def rtdl_ft(features: int, out_features: int, dropout: float) -> nn.Module:
    """rtdl's FT-Transformer as the zoo trains it: one block of 32, 4 heads, `dropout` on attention and FFN."""
    import rtdl_revisiting_models as rtdl

    return rtdl.FTTransformer(n_cont_features=features, cat_cardinalities=[], d_out=out_features, n_blocks=1,
                              d_block=32, attention_n_heads=4, attention_dropout=dropout, ffn_d_hidden_multiplier=2.0,
                              ffn_dropout=dropout, residual_dropout=0.0)


class RtdlFT(nn.Module):
    def __init__(self, input_shape, out_features):
        super().__init__()
        self.net = rtdl_ft(input_shape[0], out_features, 0.1)

    def forward(self, x):
        return self.net(x, None)


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.down(x))


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (2-2-2-2 basic blocks, batch norm, a 3x3 stem as for 32x32 images) at a
    quarter of its width, so five folds train in a bench's minutes on a CPU."""

    def __init__(self, input_shape, out_features, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks, c = [], width
        for i, w in enumerate([width, 2 * width, 4 * width, 8 * width]):
            blocks += [Block(c, w, 1 if i == 0 else 2), Block(w, w, 1)]
            c = w
        self.blocks, self.head = nn.Sequential(*blocks), nn.Linear(c, out_features)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


MODULES = {"lstm": LSTMNet, "rtdl_resnet": RtdlResNet, "ft_transformer": RtdlFT, "resnet18": ResNet18}


TABLE = ["dataset=heart", "loss=ce", "eval=kfold", "eval.k=5", "trainer.epochs=40", "trainer.batch_size=32"]
IMAGES = ["dataset=digits", "dataset.size=[32,32]", "eval=kfold", "eval.k=5", "trainer.epochs=3",
          "trainer.batch_size=64"]
SEEDS = ["trainer.seeds=3"]  # a k-fold x seeds study: 15 members
# case -> (its module, the study's overrides, what its speed must reach against the plain loop; None: no bar)
CASES = {"lstm": ("lstm", TABLE, 1.0), "rtdl_resnet": ("rtdl_resnet", TABLE, 3.0),
         "ft_transformer": ("ft_transformer", TABLE, 1.5), "resnet18": ("resnet18", IMAGES, 1.0),
         "rtdl_resnet x3 seeds": ("rtdl_resnet", TABLE + SEEDS, None),
         "ft_transformer x3 seeds": ("ft_transformer", TABLE + SEEDS, None)}
MEMORY_BAR = 1.5  # resnet18: runner's peak memory at most this many times the plain loop's


def contender(case: str, kind: str, quick: bool, threads: int | None = None, memory: bool = False) -> dict:
    """Plan the case's study as `runner train` would and train it: runner's fit (its stacking choice included)
    or the plain loop on `threads` CPU threads; seconds of training and this process's peak resident size, and
    with `memory` the peak PSS of it and its workers (PssPeak: its sampling slows the training it measures)."""
    sys.path.insert(0, str(HERE))
    import images as im
    import workloads as w

    from runner.fit import fit_population
    from runner.study import population
    from runner.user_code import give

    module, overrides, _ = CASES[case]
    cls = MODULES[module]
    extra = (["trainer.epochs=2"] if quick else []) + (["trainer.workers=1"] if kind == "one" else [])
    study, pre = _study(w.compose_config, [*overrides, "model=module", f"model.target={give(cls)}",
                                           "trainer.progress=false", *extra])
    sampler = PssPeak() if memory else None
    start = time.perf_counter()
    workers = 0
    if kind in ("runner", "one"):
        fitted = fit_population(study, study.members, pre, study.over)
        seconds, stacking = time.perf_counter() - start, fitted.model.stacking
        workers = stacking.get("workers", 1) if stacking else 1
    else:
        population(study, study.members, pre)
        torch.set_num_threads(threads or torch.get_num_threads())
        start = time.perf_counter()
        seconds, stacking = im.plain_loop(study, pre, lambda k: cls(study.input_shape, k))[0], None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": (sampler.stop() or rss) if sampler else None, "rss_mib": rss,
            "stacking": stacking,
            "threads": torch.get_num_threads(), "workers": workers or None,
            "path": fitted.model.path if kind != "plain" else None}


class PssPeak:
    """The largest PSS of this process and its children together, sampled every 10 ms on a thread (Linux; 0
    elsewhere)."""

    def __init__(self):
        self.peak, self.running = 0.0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, sum(_pss_mib(pid) for pid in [os.getpid(), *_children()]))
            time.sleep(0.01)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.peak


def _children() -> list[int]:
    try:
        return [int(p) for task in Path("/proc/self/task").iterdir()
                for p in (task / "children").read_text().split()]
    except OSError:
        return []


def _pss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in text.splitlines() if line.startswith("Pss:")), 0.0)


def _study(compose, overrides: list[str]):
    from runner.data import preprocess
    from runner.study import plan

    study = plan(compose(overrides))
    return study, preprocess(study.dataset, study.members)


def run_case(case: str, kind: str, quick: bool, threads: int | None = None, memory: bool = False) -> dict:
    """One contender in a fresh process; its JSON line."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--case", case, "--kind", kind,
                           *(["--quick"] if quick else []), *(["--threads", str(threads)] if threads else []),
                           *(["--memory"] if memory else [])],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if done.returncode != 0:
        raise RuntimeError(f"zoo {case} {kind} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def workload(args, out: dict) -> None:
    """Workload 6: each zoo case, runner and the plain loop in processes of their own, `repeats` times; the plain
    loop on one thread and on one per core, the faster of the two counting. After the first round, a memory run of
    each (the plain loop on its faster thread count)."""
    from runner.engine.device import usable_cores

    got = {case: {"runner": [], "one": [], "plain": [], "memory": {}} for case in CASES}
    for repeat in range(args.repeats):
        for case in CASES:
            try:
                got[case]["runner"].append(ours := run_case(case, "runner", args.quick))
                if (ours["workers"] or 1) > 1:  # and in one process, for what the workers add
                    got[case]["one"].append(run_case(case, "one", args.quick))
                plain = [run_case(case, "plain", args.quick, t) for t in sorted({1, usable_cores()})]
                best = min(plain, key=lambda p: p["seconds"])
                got[case]["plain"].append({**best, "seconds_by_threads": {p["threads"]: p["seconds"] for p in plain}})
                if repeat == 0:
                    got[case]["memory"] = {"runner": run_case(case, "runner", args.quick, memory=True)["peak_mib"],
                                           "plain": run_case(case, "plain", args.quick, best["threads"],
                                                             memory=True)["peak_mib"]}
            except Exception as exc:  # noqa: BLE001: one broken case must not hide the others
                out.setdefault("errors", {})[f"zoo {case}"] = str(exc)
    out["zoo"] = got


def rows(out: dict, row, med) -> None:
    """The zoo's table rows: runner's training time beside the plain loop's, and peak memory."""
    for i, (case, (_, overrides, most)) in enumerate(CASES.items()):
        runs = out.get("zoo", {}).get(case, {})
        ours, one, plain = ([x["seconds"] for x in runs.get(k, [])] for k in ("runner", "one", "plain"))
        r = med(ours)
        members = "5 folds x 3 seeds" if SEEDS[0] in overrides else "5 folds"
        workers = max([x.get("workers") or 1 for x in runs.get("runner", [])], default=1)
        row("model zoo" if i == 0 else "", f"model=module {case.split()[0]} ({members})"
            + (f", {workers} workers" if workers > 1 else ""), ours, r)
        if one:
            row("", "runner in one process (trainer.workers=1)", one, r)
        if most is None:
            row("", "plain PyTorch loop, 1 model at a time", plain, r)
        else:
            row("", "plain PyTorch loop, 1 model at a time", plain, r,
                f"runner >= {most:g}x", lambda m, r=r, most=most: r is not None and m / r >= most)
        rm, pm = (runs.get("memory", {}).get(k) for k in ("runner", "plain"))
        if rm and pm:
            bar = f"<= {MEMORY_BAR}x plain" if case == "resnet18" else ""
            row("", "peak memory, runner / plain loop", [rm], None, bar,
                (lambda m, pm=pm: m / pm <= MEMORY_BAR) if bar else None, unit="MiB", ratio=f"{rm / pm:.2f}x plain")


def details(out: dict) -> list[str]:
    """How runner ran each case: its path and how many members stepped together (with the timings)."""
    lines = []
    for case, runs in out.get("zoo", {}).items():
        if runs.get("runner"):
            first = runs["runner"][0]
            lines.append(f"zoo {case}: {first['path']}; {first.get('threads')} thread(s); "
                         f"{first.get('workers') or 1} process(es); stacking {first['stacking']}")
        if runs.get("plain"):
            lines.append(f"zoo {case} plain loop, seconds by threads: "
                         + "; ".join(str(p.get("seconds_by_threads")) for p in runs["plain"]))
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=list(CASES), required=True)
    parser.add_argument("--kind", choices=["runner", "one", "plain"], required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, help="the plain loop's CPU threads (default: as runner chose)")
    parser.add_argument("--memory", action="store_true", help="sample the peak PSS (slows the training it measures)")
    a = parser.parse_args()
    print(json.dumps(contender(a.case, a.kind, a.quick, a.threads, a.memory)))
