"""Property tests: random override lists and small random CSV files. Every outcome is a finished run or one
error line with exit status 2; never a traceback, never a run directory that passes for a result."""

import json
import string
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.commands.cli import main

BASE = ["trainer.epochs=2", "trainer.progress=false", "trainer.early_stopping.patience=1"]
FAST = settings(max_examples=4, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Valid and invalid overrides, Hydra grammar errors included; the same key twice is a case too.
OVERRIDES = [
    "optim=sgd", "optim=adam", "optim=adamw", "optim=rmsprop", "optim=adagrad", "optim=nope", "optim.lr=0.05",
    "optim.lr=-1", "optim.lr=inf", "optim.lr=nan", "optim.lr=abc", "optim.momentum=0.5", "optim.momentum=1.5",
    "optim.nesterov=true", "optim.betas=[0.9]", "optim.weight_decay=0.01", "sched=step", "sched=exponential",
    "sched=cosine", "sched=warmup_cosine", "sched=onecycle", "sched=plateau", "sched.step_size=0",
    "sched.gamma=-1", "sched.gamma=0.5", "sched.monitor=val/accuracy", "sched.monitor=val/rmse",
    "sched.warmup_epochs=1", "eval=kfold", "eval.k=3", "eval.k=1", "eval.refit=true", "eval.stratify=false",
    "eval.val_fraction=0", "eval.val_fraction=0.9", "eval.test_fraction=0.5", "eval.metric=roc_auc",
    "eval.metric=r2", "eval.metric=nope", "eval.baselines=[logreg]", "eval.baselines=[svm]", "model=logreg",
    "model=mpl", "model.hidden=[4,4]", "model.hidden=[0]", "model.dropout=0.3", "model.dropout=1.5",
    "model.norm=batch", "model.activation=relux", "loss=bce", "loss=ce", "loss=mse", "loss.label_smoothing=0.1",
    "loss.pos_weight=2", "loss.class_weights=[1,2]", "loss.class_weights=[1]", "reg.l2=0.01", "reg.l1=-1",
    "trainer.seeds=2", "trainer.batch_size=full", "trainer.batch_size=0", "trainer.batch_size=8",
    "trainer.early_stopping.monitor=val/accuracy", "trainer.early_stopping.monitor=val/rmse",
    "trainer.grad_clip.norm=1", "trainer.grad_clip.value=-1", "dataset.positive=1", "dataset.positive=7",
    "dataset.task=regression", "dataset.task=multiclass", "dataset.drop=[age]", "dataset.drop=[nope]",
    "+optim.lrr=1", "++foo=bar", "+trainer.extra=1", "optim.lr=", "=3", "foo", "optim.lr=[1,2",
    "dataset.path=/nonexistent/x.csv", "experiment=regularized", "experiment=nope", "overwrite=true",
    "dataset=digits", "dataset.limit=60", "dataset.size=[4,4]", "model=cnn", "model.kernel=2", "model.norm=group",
    "aug=mixup", "aug=light", "aug.rotate=200", "aug.noise=0.1", "model=moe", "model.top_k=9", "dataset=piecewise",
    "dataset=diabetes", "loss.balance=-1", "ensemble=seeds", "ensemble=compare", "ensemble.mc_dropout=2",
    "ensemble.bagging=-1",
]


@pytest.fixture
def run_train(capsys, monkeypatch):
    """Run `runner train` in-process in a fresh temporary run dir; returns (status, stderr, run dir), checked."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])

    def run(args: list[str], folder: Path):
        run_dir = folder / "run"
        status = main(["train", *args, *BASE, f"hydra.run.dir={run_dir}"])
        err = capsys.readouterr().err
        _check_outcome(status, err, run_dir, args)
        return status

    return run


def _check_outcome(status: int, err: str, run_dir: Path, args) -> None:
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    if status == 0:
        assert lines == [], (args, err)
        assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"
        assert "metrics" in json.loads((run_dir / "results.json").read_text())
        return
    assert status == 2, (args, status, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (args, err)
    if run_dir.exists():  # a run that started and failed says so, and left no results.json behind
        assert json.loads((run_dir / "status.json").read_text())["status"] == "failed", args
        assert not (run_dir / "results.json").exists(), args


def _overrides_property(run_train, overrides):
    with tempfile.TemporaryDirectory() as folder:
        run_train(overrides, Path(folder))


@FAST
@given(st.lists(st.sampled_from(OVERRIDES), max_size=4))
def test_random_override_lists(run_train, overrides):
    _overrides_property(run_train, overrides)


@pytest.mark.slow
@SLOW
@given(st.lists(st.sampled_from(OVERRIDES), max_size=6))
def test_random_override_lists_many(run_train, overrides):
    _overrides_property(run_train, overrides)


# ---------------------------------------------------------------- random CSV files

NAMES = ["a", "b", "a", "y", "é", "列", "x y", "", "1", "Unnamed: 0"]
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # nan, inf, 1e308, -0.0
    st.integers(-3, 3).map(str),
    st.sampled_from(["", "NA", "?", "yes", "no", "1e308", "-inf", "inf", "é", "\"a,b\"", "1,5", "TRUE"]),
    st.text(string.ascii_letters + string.digits + " .-", max_size=4),
)


@st.composite
def csv_files(draw) -> bytes:
    """A small CSV with a target column `y`: empty, header only, one row, one class, NaN/inf/text columns,
    duplicate or unicode names; or binary junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)) + ["y"]
    rows = draw(st.sampled_from([0, 1, 2, 10, 12, 25]))
    target = draw(st.sampled_from(["binary", "one class", "multiclass", "numbers", "text", "mixed"]))
    lines = [",".join(names)]
    for i in range(rows):
        cells = [draw(CELLS) for _ in names[:-1]]
        y = {"binary": str(i % 2), "one class": "1", "multiclass": str(i % 3), "numbers": repr(i * 0.37 - 1),
             "text": "ab"[i % 2], "mixed": draw(CELLS)}[target]
        lines.append(",".join(cells + [y]))
    return ("\n".join(lines) + "\n").encode()


def _csv_property(run_train, content: bytes, extra: list[str]):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_bytes(content)
        run_train(["dataset=csv", f"dataset.path={path}", "dataset.target=y", *extra], Path(folder))


@FAST
@given(csv_files(), st.lists(st.sampled_from(["eval=kfold", "eval.k=3", "trainer.seeds=2", "loss=mse"]),
                             max_size=2, unique=True))
def test_random_csv_files(run_train, content, extra):
    _csv_property(run_train, content, extra)


@pytest.mark.slow
@SLOW
@given(csv_files(), st.lists(st.sampled_from(["eval=kfold", "eval.k=3", "trainer.seeds=2", "loss=mse",
                                              "eval=loo", "dataset.task=regression", "eval.refit=true"]),
                             max_size=3, unique=True))
def test_random_csv_files_many(run_train, content, extra):
    _csv_property(run_train, content, extra)


# ---------------------------------------------------------------- run folders from elsewhere

PAYLOAD = "- !!python/object/apply:os.system ['touch {marker}']\n"
# A config file planted in the folder that, loaded as a group's option, would have Hydra call shutil.copyfile.
GLOBAL = ("# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: shutil.copyfile\n"
          "      src: {outside}/victim.txt\n      dst: {marker}\n")
EDITS = {
    ".hydra/overrides.yaml": [PAYLOAD, "not: [a list\n", "- +hydra.callbacks.x._target_=shutil.rmtree\n"
                              "- +hydra.callbacks.x.path={outside}\n", "- optim.lr=0.5\n", "[]\n", "- 3\n",
                              "- model={run}/.hydra/e\n", "- model=../../../../../../../../..{run}/.hydra/e\n",
                              "- +experiment=../../../../../../../../..{run}/.hydra/e\n",
                              "- model=mlp/../../../../../../../../..{run}/.hydra/e\n", "- optim=../optim/sgd\n",
                              "- model/x=../../../../../../../../..{run}/.hydra/e\n", "- model=[mlp,{run}/e]\n"],
    ".hydra/config.yaml": [PAYLOAD, "{broken", "optim: {lr: 0.5}\n", None],
    "status.json": ['{"status": "ok"}', '{"status": "running", "pid": 1}', "[]", "{", None],
    "checkpoints/best.pt": [b"\x80\x04garbage", b"", None],
    "checkpoints/fit_state.pt": [b"\x80\x04garbage", b"PK\x03\x04", None],
}
LINKS = ["status.json.tmp", "predictions.csv", "results.json", ".lock", "checkpoints/best.pt.tmp"]


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("template") / "run"
    assert main(["train", *BASE, "plots=false", f"hydra.run.dir={run}"]) == 0
    return run


def _apply(run: Path, edits: dict, links: list, outside: Path, marker: Path) -> None:
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))  # resumable by default
    (run / ".hydra" / "e.yaml").write_text(GLOBAL.replace("{marker}", str(marker)).replace("{outside}", str(outside)))
    for name, content in edits.items():
        path = run / name
        if content is None:
            path.unlink(missing_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{marker}", str(marker)).replace("{outside}", str(outside))
                            .replace("{run}", str(run)))
    for name in links:
        path = run / name
        path.unlink(missing_ok=True)
        path.symlink_to(outside / "victim.txt")


FOLDER_EDITS = (st.dictionaries(st.sampled_from(sorted(EDITS)), st.integers(0, 99), max_size=3),
                st.lists(st.sampled_from(LINKS), max_size=2, unique=True))


@FAST
@given(*FOLDER_EDITS)
def test_random_edits_of_a_copied_run_folder(template_run, capsys, picks, links):
    _edits_property(template_run, capsys, picks, links)


@pytest.mark.slow
@SLOW
@given(*FOLDER_EDITS)
def test_random_edits_of_a_copied_run_folder_many(template_run, capsys, picks, links):
    _edits_property(template_run, capsys, picks, links)


def _edits_property(template_run, capsys, picks, links):
    """resume and predict on a run folder someone edited: a finished run or one line with exit 2, and nothing
    outside the folder is touched (no code from the folder runs, no link is written through, no config file
    it holds is loaded: a group value naming one is ignored)."""
    import shutil

    from runner.paths import bundled_data

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        outside, marker = root / "outside", root / "pwned"
        outside.mkdir()
        (outside / "victim.txt").write_text("keep me")
        run = root / "run"
        shutil.copytree(template_run, run)
        edits = {name: EDITS[name][i % len(EDITS[name])] for name, i in picks.items()}
        _apply(run, edits, links, outside, marker)
        capsys.readouterr()
        for args in (["resume", str(run)],
                     ["predict", str(run), "--data", str(bundled_data("heart.csv")), "--out", str(root / "p.csv")]):
            status = main(args)
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if not line.startswith(("warning: ", "note: ", "ignored in "))]
            assert status in (0, 2), (edits, links, args, err)
            assert lines == [] if status == 0 else (len(lines) == 1 and lines[0].startswith("error: ")), \
                (edits, links, args, err)
            assert not marker.exists() and (outside / "victim.txt").read_text() == "keep me"
            assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
