"""The thread-policy row: the README's digits k-fold CNN end to end, runner's thread choice vs the best by hand."""

import statistics
import subprocess
import sys

# The README's command, shortened to a few epochs (the per-step cost, which the thread choice is about,
# does not depend on the epoch count).
DIGITS_KFOLD = ["train", "dataset=digits", "model=cnn", "eval=kfold", "eval.k=5", "trainer.seeds=2",
                "trainer.batch_size=64", "trainer.progress=false"]
CHOICES = {"runner's choice": [], "threads=1": ["trainer.threads=1"], "threads=2": ["trainer.threads=2"]}
BUSY = [sys.executable, "-c", "while True: pass"]  # keeps one core busy, as a neighbour's job would


def threads_workload(args, out: dict, tmp, subprocess_s, timed) -> None:
    """Each choice as a fresh `runner train` process, with the machine idle and with one core kept busy."""
    epochs = [f"trainer.epochs={2 if args.quick else 5}"]
    times = {cond: {name: [] for name in CHOICES} for cond in ("idle", "one core busy")}
    for cond in times:
        if args.quick and cond != "idle":
            continue  # --quick stays under 2 minutes: the busy machine (twice as slow) is the full bench's
        busy = subprocess.Popen(BUSY) if cond != "idle" else None
        try:
            for rep in range(args.repeats):
                for i, (name, extra) in enumerate(CHOICES.items()):
                    if args.quick and name == "threads=2":
                        continue  # --quick stays under 2 minutes: runner's choice against one thread only
                    run_dir = [f"hydra.run.dir={tmp}/threads-{cond.replace(' ', '_')}-{i}-{rep}"]
                    t = timed(f"digits kfold {cond} {name}",
                              lambda: subprocess_s(DIGITS_KFOLD + epochs + extra + run_dir), out)
                    if t is not None:
                        times[cond][name].append(t)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    out["threads_policy"] = {"epochs": epochs[0], "times_s": times}


def rows(out: dict, row) -> None:
    """Per condition: runner's choice (median) as a ratio to the faster (median) of threads=1 and threads=2 (bar 1.3x)."""
    policy = out.get("threads_policy")
    if not policy:
        return
    first = True
    for cond, times in policy["times_s"].items():
        best = min((statistics.median(xs) for name, xs in times.items() if xs and name != "runner's choice"),
                   default=None)
        auto = times["runner's choice"]
        ratio = statistics.median(auto) / best if auto and best else None
        label = f"digits kfold CNN ({policy['epochs']})" if first else ""
        first = False
        row(label, f"{cond}: runner's choice", auto, None, "<= 1.3x best by hand",
            lambda m: ratio is not None and ratio <= 1.3, ratio="" if ratio is None else f"{ratio:.2f}x best")
        for name in ("threads=1", "threads=2"):
            xs = times[name]
            row("", f"{cond}: {name}", xs, None, ratio=f"{statistics.median(xs) / best:.2f}x best" if xs and best else "")
