"""split_indices.json records the models stacking and blending train, so an outside check can confirm from the
file alone that no out-of-fold or meta-model feature came from a model that saw its row."""

import json

from runner.commands.cli import main


def _splits(run):
    return json.loads((run / "split_indices.json").read_text())


def test_stacking_inner_members_are_recorded_and_never_saw_the_rows_they_predict(tmp_path):
    run = tmp_path / "stack"
    assert main(["train", "eval=kfold", "eval.k=3", "ensemble=stacking", "ensemble.inner_k=4", "trainer.seeds=2",
                 "trainer.epochs=3", "trainer.progress=false", "eval.baselines=[]", "plots=false",
                 f"hydra.run.dir={run}"]) == 0
    splits = _splits(run)
    assert len(splits) == 3 * 2  # the list is still one record per member; inner models are nested
    for member in splits:
        fitted = set(member["train"]) | set(member["val"])
        inner = [m for m in member["inner_models"] if m["role"] == "stacking inner member"]
        meta = [m for m in member["inner_models"] if m["role"] == "stacking meta-model"]
        assert sorted(m["inner"] for m in inner) == [0, 1, 2, 3] and len(meta) == 1
        held = [r for m in inner for r in m["held_out"]]
        assert sorted(held) == sorted(fitted)  # every outer training row predicted out of fold exactly once
        for m in inner:
            assert not set(m["held_out"]) & (set(m["train"]) | set(m["val"]))
            assert m["test"] == member["test"] and not set(m["test"]) & (set(m["train"]) | set(m["val"]))
        assert sorted(meta[0]["train"]) == sorted(fitted) and meta[0]["test"] == member["test"]


def test_blending_meta_models_are_recorded_on_the_members_validation_halves(tmp_path):
    run = tmp_path / "blend"
    assert main(["train", "ensemble=blending", "trainer.seeds=2", "trainer.epochs=3", "trainer.progress=false",
                 "eval.baselines=[]", "plots=false", f"hydra.run.dir={run}"]) == 0
    for member in _splits(run):
        [meta] = member["inner_models"]
        assert meta["role"] == "blending meta-model"
        assert not set(meta["train"]) & set(meta["val"])
        assert sorted(meta["train"] + meta["val"]) == sorted(member["val"])  # halves of the member's val rows
        assert not (set(meta["train"]) | set(meta["val"])) & set(member["train"])  # the member never saw them
        assert meta["test"] == member["test"]


def test_a_run_without_stacking_records_no_inner_models(tmp_path):
    run = tmp_path / "plain"
    assert main(["train", "trainer.epochs=2", "trainer.progress=false", "eval.baselines=[]", "plots=false",
                 f"hydra.run.dir={run}"]) == 0
    assert all("inner_models" not in member for member in _splits(run))
