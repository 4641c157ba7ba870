"""The sweep workload of `make bench`: one 12-job heart sweep under Hydra's basic and joblib launchers and runner's
population launcher, each a fresh process beside one default `runner train`, and the jobs' results compared."""

import json
import statistics
from pathlib import Path

# optim.lr x optim.weight_decay, 3 x 4 jobs of 5 seeds each
SWEEP = ["-m", "optim.lr=0.01,0.003,0.001", "optim.weight_decay=0,1e-4,1e-3,1e-2", "eval=holdout", "trainer.seeds=5"]
LAUNCHERS = ("population", "basic", "joblib")
JOBS = 12


def sweep_workload(args, out: dict, tmp: Path, subprocess_s, timed) -> None:
    """Per repetition: one default `runner train`, then the sweep under each launcher, side by side in one loop
    (so each ratio meets the same load); then every job's results.json numbers, population and joblib vs basic."""
    quick = ["trainer.epochs=10"] if args.quick else []
    times: dict[str, list[float]] = {"default": [], **{name: [] for name in LAUNCHERS}}
    pairs: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    for rep in range(args.repeats):
        ref = timed("sweep reference: runner train", lambda: subprocess_s(
            ["train", *quick, *args.threads, f"hydra.run.dir={tmp}/default-{rep}"]), out)
        if ref is not None:
            times["default"].append(ref)
        for name in LAUNCHERS:
            if name == "joblib" and rep > 0:
                continue  # once is enough: here it has taken minutes (350 s for the --quick sweep)
            if args.quick and name != "population":
                continue  # --quick stays under 2 minutes: the default launcher only (joblib alone took 6 minutes)
            where = tmp / f"{name}-{rep}"
            t = timed(f"sweep {name}", lambda: subprocess_s(
                ["train", *SWEEP, *quick, *args.threads, f"hydra/launcher={name}", f"hydra.sweep.dir={where}"]), out)
            if t is not None:
                times[name].append(t)
                if ref is not None:
                    pairs[name].append(t / ref)
    out["sweep12"] = {"times_s": times, "ratios": pairs,
                      "max_abs_diff": {name: max_abs_diff(tmp / f"{name}-0", tmp / "basic-0")
                                       for name in ("population", "joblib")}}


def max_abs_diff(mine: Path, basic: Path) -> float | None:
    """The largest |difference| between any number of any job's results.json (timing aside) in two sweep dirs;
    None when a job's results are missing or differ in keys or non-numbers (never equal, then)."""
    worst = 0.0
    for j in range(JOBS):
        try:
            a, b = (numbers(json.loads((d / str(j) / "results.json").read_text())) for d in (mine, basic))
        except OSError:
            return None
        if a.keys() != b.keys():
            return None
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
                if x != y and not (x != x and y != y):  # NaN equals NaN here
                    worst = max(worst, abs(x - y))
            elif x != y:
                return None
    return worst


def numbers(node, path: str = "") -> dict:
    """Every leaf of a results.json dict by its dotted path, timing left out (the one thing that must differ)."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() if key != "timing"
                for k, v in numbers(value, f"{path}.{key}").items()}
    if isinstance(node, list):
        return {k: v for i, value in enumerate(node) for k, v in numbers(value, f"{path}[{i}]").items()}
    return {path: node}


def rows(out: dict, row) -> None:
    """The sweep rows of the benchmark table, each judged as a ratio to the default run timed beside it."""
    s = out.get("sweep12", {})
    times, ratios = s.get("times_s", {}), s.get("ratios", {})
    row("sweep-12", "runner train (default), the reference", times.get("default", []))
    labels = {"population": "-m, hydra/launcher=population", "basic": "-m, hydra/launcher=basic",
              "joblib": "-m, hydra/launcher=joblib"}
    for name in LAUNCHERS:
        ratio = statistics.median(ratios[name]) if ratios.get(name) else None
        bar, ok = ("<= 2x default run", lambda m, r=ratio: r is not None and r <= 2) if name == "population" else ("", None)
        row("", f"{labels[name]}, 12 jobs x 5 seeds", times.get(name, []), None, bar, ok,
            ratio="" if ratio is None else f"{ratio:.2f}x default")


def details(out: dict) -> list[str]:
    """The line saying whether every job's results equal the basic launcher's."""
    diffs = {} if out.get("args", {}).get("quick") else out.get("sweep12", {}).get("max_abs_diff", {})  # no basic
    parts = [f"{name} {'results missing or keys differ' if d is None else f'{d:.1e}'}"
             + ("" if d is None else (" [green]PASS[/]" if d <= 1e-6 else " [red]FAIL[/]"))
             for name, d in diffs.items()]
    return ["sweep-12 results.json vs hydra/launcher=basic, max |diff| over every number of the 12 jobs (bar "
            "<= 1e-6): " + "; ".join(parts)] if parts else []
