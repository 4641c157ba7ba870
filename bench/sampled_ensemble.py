"""The sampled-ensemble workload: experiment=small_table_ensemble (a population of sampled configurations, greedy
ensemble selection on each fold's validation rows) on small tables, 10 folds, judged on the same folds against
HistGradientBoosting and against the best single configuration, and timed against one default k-fold run.

Tables: heart (bundled), scikit-learn's breast_cancer and wine (written to CSV from the copies sklearn ships)
and diabetes (dataset=diabetes). Each run is a fresh `runner train` process, as a user would start it.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNNER = Path(sys.executable).parent / "runner"
PRESET = "experiment=small_table_ensemble"
DEFAULT = ["eval=kfold", "eval.k=10"]  # one default k-fold run, the time reference
TIME_BAR = 10  # the preset in at most this many times one default k-fold run


def tables(folder: Path) -> dict[str, list[str]]:
    """Table name -> the overrides that load it (sklearn's bundled tables written as CSV with labelled classes)."""
    from sklearn.datasets import load_breast_cancer, load_wine

    out = {"heart": []}
    for name, load in (("breast_cancer", load_breast_cancer), ("wine", load_wine)):
        bunch = load(as_frame=True)
        frame = bunch.frame.copy()
        frame["target"] = np.asarray(bunch.target_names)[bunch.target]
        frame.to_csv(folder / f"{name}.csv", index=False)
        out[name] = ["dataset=csv", f"dataset.path={folder / name}.csv", "dataset.target=target"]
    out["diabetes"] = ["dataset=diabetes"]
    return out


def train(run: Path, overrides: list[str]) -> tuple[float, dict]:
    """Wall seconds of `runner train OVERRIDES` in a fresh process, and its results.json."""
    cmd = [str(RUNNER), "train", *overrides, "trainer.progress=false", "plots=false", f"hydra.run.dir={run}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return seconds, json.loads((run / "results.json").read_text())


def workload(args, out: dict) -> None:
    """Each table: one default k-fold run and one preset run, 10 folds each; the preset's paired differences."""
    quick = ["trainer.epochs=10"] if args.quick else []
    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, data in tables(folder).items():
            try:
                default_s, _ = train(folder / f"{name}_default", [*DEFAULT, *data, *quick])
                preset_s, results = train(folder / f"{name}_preset", [PRESET, *data, *quick])
            except Exception as exc:  # noqa: BLE001: one broken table must not hide the others
                out.setdefault("errors", {})[f"sampled-ensemble {name}"] = str(exc)
                continue
            metric = "test/rmse" if results["task"] == "regression" else "test/accuracy"
            vs = results["ensembles"]["greedy"]["vs"]
            got[name] = {"metric": metric, "ensemble": results["metrics"][metric],
                         "hgb": results["baselines"]["hgb"][metric],
                         "vs_hgb": results["vs_baselines"]["hgb"][metric],
                         "vs_best_single": vs["best single"][metric], "vs_each_member": vs["each member"][metric],
                         "members": results["members"], "default_s": default_s, "preset_s": preset_s}
    out["sampled_ensemble"] = got


def _gain(g: dict) -> float:
    """The ensemble's gain over the best single configuration, relative to that configuration's metric (positive:
    better, accuracy up or RMSE down), so tables of accuracy and of RMSE average."""
    d, ensemble = g["vs_best_single"]["mean"], g["ensemble"]["mean"]
    better = d if g["metric"].endswith("accuracy") else -d
    return better / abs(ensemble - d)


def _not_worse(d: dict, metric: str) -> bool:
    """Not significantly worse: the interval reaches the side where the ensemble is at least as good."""
    if not d.get("ci95"):
        return True
    return d["ci95"][1] >= 0 if metric.endswith("accuracy") else d["ci95"][0] <= 0


def rows(out: dict, row) -> None:
    """Per table: the ensemble minus HistGradientBoosting and minus the best single configuration (paired over the
    10 folds: mean, then its 95% interval), and the preset's wall time as a ratio to one default k-fold run."""
    got = out.get("sampled_ensemble", {})
    for i, (name, g) in enumerate(got.items()):
        metric = g["metric"].split("/")[1]

        def ci(d):
            return "" if not d.get("ci95") else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

        row("sampled ensemble" if i == 0 else "", f"{name}: ensemble - hgb ({metric}, 10 folds)",
            [g["vs_hgb"]["mean"]], None, "not significantly worse",
            lambda m, g=g: _not_worse(g["vs_hgb"], g["metric"]), unit="", ratio=ci(g["vs_hgb"]))
        row("", f"{name}: ensemble - best single configuration", [g["vs_best_single"]["mean"]], None, "", None,
            unit="", ratio=ci(g["vs_best_single"]))
        row("", f"{name}: wall time, preset / default k-fold", [g["preset_s"]], None, f"<= {TIME_BAR}x",
            lambda m, g=g: m / g["default_s"] <= TIME_BAR, ratio=f"{g['preset_s'] / g['default_s']:.1f}x default")
    if got:
        mean = 100 * float(np.mean([_gain(g) for g in got.values()]))
        row("", "mean over tables: ensemble's gain over best single", [mean], None, "> 0", lambda m: m > 0, unit="%",
            ratio="relative")


def details(out: dict) -> list[str]:
    """Each table's headline beside HistGradientBoosting's, and the ensemble minus the members' mean."""
    lines = []
    for name, g in out.get("sampled_ensemble", {}).items():
        e, h, each = g["ensemble"], g["hgb"], g["vs_each_member"]
        lines.append(f"sampled ensemble {name} ({g['members']} members): {g['metric']} ensemble {e['mean']:.4g}, "
                     f"hgb {h['mean']:.4g}; ensemble - each member's mean {each['mean']:+.4f}; "
                     f"{g['preset_s']:.1f} s vs {g['default_s']:.1f} s default")
    return lines
