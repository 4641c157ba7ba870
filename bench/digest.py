"""A digest of what runner computes on fixed workloads, for changes that must not change behaviour (a refactor):
each workload's results.json without its timings, and a hash of its predictions.csv.

    .venv/bin/python bench/digest.py write before.json     # on the commit before the change
    .venv/bin/python bench/digest.py write after.json      # after it
    .venv/bin/python bench/digest.py compare before.json after.json   # "identical (11 workloads)", or what differs
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNNER = Path(sys.executable).parent / "runner"
WORKLOADS = {
    "holdout": [],
    "kfold": ["eval=kfold"],
    "kfold_moe": ["eval=kfold", "model=moe", "trainer.epochs=8"],
    "seeds_swa_reg": ["eval=kfold", "trainer.seeds=2", "avg=swa", "model.dropout=0.2", "reg.l2=1e-3", "optim=sgd",
                      "sched=cosine", "trainer.epochs=12", "aug=mixup"],
    "ensemble_greedy": ["experiment=small_table_ensemble", "trainer.epochs=6"],
    "distill": ["ensemble=distill", "trainer.epochs=6"],
    "stacking": ["ensemble=stacking", "trainer.epochs=6", "eval=kfold"],
    "digits_cnn": ["dataset=digits", "model=cnn", "trainer.epochs=3"],
    "digits_cnn_vmap": ["dataset=digits", "model=cnn_vmap", "trainer.epochs=2"],
    "diabetes_plateau": ["dataset=diabetes", "sched=plateau", "optim=rmsprop", "trainer.epochs=10", "eval=kfold"],
    "ema_adagrad": ["avg=ema", "optim=adagrad", "trainer.epochs=10"],
}
TIMES = {"timing", "inference_s_per_row", "seconds", "probe", "budget_mib", "member_mib"}  # wall-clock and machine


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def write(out: Path) -> None:
    digest = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in WORKLOADS.items():
            run = Path(tmp) / name
            done = subprocess.run([str(RUNNER), "train", *overrides, "trainer.progress=false", f"hydra.run.dir={run}"],
                                  capture_output=True, text=True)
            if done.returncode:
                digest[name] = {"exit": done.returncode, "stderr": done.stderr.strip()[-400:]}
            else:
                digest[name] = {"results": _without_times(json.loads((run / "results.json").read_text())),
                                "predictions_sha256": hashlib.sha256((run / "predictions.csv").read_bytes()).hexdigest()}
            print(f"{name}: {'ok' if not done.returncode else 'exit ' + str(done.returncode)}", flush=True)
    out.write_text(json.dumps(digest, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> int:
    before, after = (json.loads(p.read_text()) for p in (a, b))
    differ = [name for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
    print(f"identical ({len(after)} workloads)" if not differ else f"differ: {', '.join(differ)}")
    return 1 if differ else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("out", type=Path)
    both = sub.add_parser("compare")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    args = parser.parse_args()
    sys.exit(write(args.out) if args.command == "write" else compare(args.before, args.after))
