"""TensorBoard hparams data: every run's overrides and headline metrics, read back by tensorboard's own reader."""

import hashlib
import json
import sys

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from runner.rundir import events
from runner.rundir.artifacts import hparam, run_name
from runner.commands.cli import main


def _read(folder):
    """(hyperparameters, their declared types, metric tags declared, scalar values, end status, the
    hyperparameters marked as differing) of one run."""
    acc = EventAccumulator(str(folder))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    types = {h.name: api_pb2.DataType.Name(h.type) for h in experiment.hparam_infos}
    declared = [m.name.tag for m in experiment.metric_infos]
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("headline/")}
    differs = [h.name for h in experiment.hparam_infos if h.differs]
    return values, types, declared, scalars, api_pb2.Status.Name(end.status), differs


def test_a_runs_hparams_read_back_through_tensorboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # train_command hands sys.argv to Hydra
    run_dir = tmp_path / "run"
    status = main(["train", "trainer.epochs=3", "trainer.progress=false", "optim=sgd", "optim.lr=0.05",
                   "model.hidden=[8]", "trainer.early_stopping.restore_best=false", f"hydra.run.dir={run_dir}"])
    assert status == 0, capsys.readouterr().err
    results = json.loads((run_dir / "results.json").read_text())
    # Named by its overrides (trainer.progress changes nothing learnt and is left out), beside the members' curves.
    overrides = "trainer.epochs=3,optim=sgd,optim.lr=0.05,model.hidden=[8],trainer.early_stopping.restore_best=false"
    name = run_name(overrides.split(","))  # 60 characters at most: a hash keeps it apart from any other
    assert name == overrides[:51] + "~" + hashlib.sha1(overrides.encode()).hexdigest()[:8]
    assert [p.name for p in (run_dir / "tensorboard").iterdir()] == [name]  # the members' curves inside it
    assert sorted(p.name for p in (run_dir / "tensorboard" / name).iterdir())[1:] == ["events.out.tfevents.hparams"]
    values, types, declared, scalars, end, differs = _read(run_dir / "tensorboard" / name)
    # Every key of the config (a group's choice by the group's name), defaults too, each override as written:
    # whichever run's list TensorBoard shows, every run's keys are in it.
    assert {"dataset": "heart", "model": "mlp", "optim": "sgd", "optim.lr": 0.05, "optim.weight_decay": 0.0,
            "sched": "constant", "eval": "holdout", "trainer.epochs": 3.0, "trainer.batch_size": 32.0,
            "trainer.seeds": 1.0, "model.hidden": "[8]", "trainer.early_stopping.restore_best": False,
            "model.dropout": 0.0, "aug.mixup": 0.0, "loss": "auto"}.items() <= values.items()
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    leaves = {k for k, v in pd.json_normalize(config, sep=".").iloc[0].items() if v is not None and v == v}
    assert set(values) == {k.removesuffix(".name") for k in leaves} - {"trainer.progress", "trainer.threads",
                                                                        "overwrite", "plots", "trainer.stack",
                                                                        "trainer.checkpoint_every"}
    # What sets the run apart (its overrides) and the main choices are marked as differing: listed first.
    assert sorted(differs) == ["dataset", "eval", "model", "model.hidden", "optim", "optim.lr",
                               "trainer.early_stopping.restore_best", "trainer.epochs"]
    assert types["optim"] == "DATA_TYPE_STRING" and types["optim.lr"] == "DATA_TYPE_FLOAT64"
    assert types["model.hidden"] == "DATA_TYPE_STRING" and types["trainer.early_stopping.restore_best"] == \
        "DATA_TYPE_BOOL"
    # The headline under its own tags: a chart of its own, not a dot on the per-epoch val/accuracy curve.
    assert declared == ["headline/val/accuracy", "headline/test/accuracy"] and end == "STATUS_SUCCESS"
    assert scalars == pytest.approx({"headline/val/accuracy": results["validation"]["val/accuracy"]["mean"],
                                     "headline/test/accuracy": results["metrics"]["test/accuracy"]["mean"]},
                                    abs=1e-7)


def test_hparams_summaries_parse_as_tensorboards_protos():
    from tensorboard.compat.proto.summary_pb2 import Summary

    tags, parsed = [], []
    for data in events.hparams_summaries({"lr": 1e-3, "optim": "adam", "nesterov": True}, ["val/rmse"], 10.5, 12.0):
        value = Summary.FromString(data).value[0]
        tags.append(value.tag)
        assert value.metadata.plugin_data.plugin_name == "hparams"
        parsed.append(HParamsPluginData.FromString(value.metadata.plugin_data.content))
    assert tags == [metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG]
    start = parsed[1].session_start_info
    assert start.hparams["lr"].number_value == 1e-3 and start.hparams["optim"].string_value == "adam"
    assert start.hparams["nesterov"].bool_value is True and start.start_time_secs == 10.5
    assert parsed[2].session_end_info.end_time_secs == 12.0 and parsed[0].version == 0


def test_run_names_are_safe_short_and_long_ones_stay_apart():
    assert run_name([]) == "defaults"
    assert run_name(["dataset.path=/data/my file.csv", "+x=1"]) == "dataset.path=_data_my_file.csv,+x=1"
    long_a, long_b = [f"k{i}=value{i}" for i in range(30)], [f"k{i}=value{i}" for i in range(31)]
    assert len(run_name(long_a)) == 60 and run_name(long_a) != run_name(long_b)
    assert run_name(long_a)[:50] == run_name(long_b)[:50]
    # An Optuna trial's numbers to 3 significant digits (in full in the HPARAMS tab); short numbers as written.
    assert run_name(["optim.lr=0.004430375245218269", "model.dropout=0.25", "trainer.epochs=1000"]) == \
        "optim.lr=0.00443,model.dropout=0.25,trainer.epochs=1000"
    assert run_name(["optim.lr=12.34567", "x=-0.1234"]) == "optim.lr=12.3,x=-0.123"
    assert hparam("+optim.lr=1e-3") == ("optim.lr", 1e-3) and hparam("model.hidden=[8, 8]") == ("model.hidden", "[8, 8]")
