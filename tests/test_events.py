"""TensorBoard event files written without tensorboard: the same bytes as its protos, readable by its loader."""

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from runner.rundir import events
from runner.rundir.artifacts import write_tensorboard


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 2**40, -1])
def test_event_bytes_equal_tensorboards_protos(step):
    scalars = {"train/loss": 0.6931, "val/accuracy": 1.0, "lr": 1e-3}
    want = Event(wall_time=1764300000.25, step=step,
                 summary=Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in scalars.items()]))
    assert events.event(1764300000.25, step, scalars) == want.SerializeToString()
    header = Event(wall_time=3.5, file_version="brain.Event:2")
    assert events.event(3.5, file_version=events.FILE_VERSION) == header.SerializeToString()


def test_record_framing_uses_tensorboards_masked_crc():
    data = b"some serialized event"
    rec = events.record(data)
    assert rec[:8] == len(data).to_bytes(8, "little") and rec[12:-4] == data
    assert int.from_bytes(rec[8:12], "little") == masked_crc32c(rec[:8])
    assert int.from_bytes(rec[-4:], "little") == masked_crc32c(data)


def test_run_curves_read_back_with_tensorboards_loader(tmp_path):
    from tensorboard.plugins.custom_scalar.layout_pb2 import Layout

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"member": np.repeat([0, 1, 2], 3), "epoch": np.tile([0, 1, 2], 3),
                          "train/loss": rng.uniform(size=9), "val/loss": rng.uniform(size=9), "lr": 0.01})
    frame.loc[8, "val/loss"] = np.nan  # a value never logged is left out, not written as NaN
    frame = frame.drop(index=5)  # member 1 stopped early: the mean and band of epoch 2 are over members 0 and 2
    write_tensorboard(tmp_path, frame)
    [path] = tmp_path.iterdir()  # one run: the experiment
    read = list(EventFileLoader(str(path)).Load())
    assert read[0].file_version == "brain.Event:2"
    [layout_value] = read[1].summary.value
    assert layout_value.tag == "custom_scalars__config__"
    assert layout_value.metadata.plugin_data.plugin_name == "custom_scalars"
    layout = Layout.FromString(layout_value.tensor.string_val[0])
    spread, each = layout.category
    assert (spread.title, each.title) == ("members' mean, min and max", "each member")
    margin = {c.title: c.margin.series[0] for c in spread.chart}
    assert margin["val/loss: members' mean, min and max"].lower == "spread/val/loss/min"
    assert margin["val/loss: members' mean, min and max"].upper == "spread/val/loss/max"
    multiline = {c.title: list(c.multiline.tag) for c in each.chart}
    assert multiline["train/loss: each member"] == [r"members/train/loss/\d+"]
    got = {(e.step, v.tag): v.tensor.float_val[0] for e in read[2:] for v in e.summary.value}  # float32
    want = {}
    for tag in ("train/loss", "val/loss", "lr"):
        wide = frame.pivot(index="epoch", columns="member", values=tag)
        for epoch, row in wide.iterrows():
            row = row.dropna()
            want |= {(epoch, f"members/{tag}/{m}"): v for m, v in row.items()}
            want |= {(epoch, tag): row.mean(), (epoch, f"spread/{tag}/min"): row.min(),
                     (epoch, f"spread/{tag}/max"): row.max()}
    assert set(got) == set(want) and (2, "members/train/loss/1") not in got
    assert got == pytest.approx(want, rel=1e-6)
    assert got[2, "val/loss"] == pytest.approx(frame.loc[2, "val/loss"], rel=1e-6)  # member 0 alone at epoch 2


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A folder as a day of work leaves it: a two-job sweep over optim.lr (two seeds each) and a 3-fold run."""
    from runner.commands.cli import main

    logs = tmp_path_factory.mktemp("tensorboard")
    assert main(["train", "-m", "optim.lr=0.01,0.001", "trainer.epochs=3", "trainer.seeds=2", "trainer.progress=false",
                 "plots=false", f"hydra.sweep.dir={logs / 'sweep'}"]) == 0
    assert main(["train", "eval=kfold", "eval.k=3", "trainer.epochs=3", "trainer.progress=false", "plots=false",
                 f"hydra.run.dir={logs / 'kfold'}"]) == 0
    return logs


# One TensorBoard run per experiment, named by what sets it apart (in a sweep, less what every job has).
RUNS = {"sweep/0": "sweep/0/tensorboard/optim.lr=0.01", "sweep/1": "sweep/1/tensorboard/optim.lr=0.001",
        "kfold": "kfold/tensorboard/eval=kfold,eval.k=3,trainer.epochs=3"}


def test_each_experiment_is_one_run_with_its_members_inside_and_hparams_beside_the_curves(logs):
    import json

    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    runs = EventMultiplexer().AddRunsFromDirectory(str(logs))
    runs.Reload()
    assert set(runs.Runs()) == set(RUNS.values())
    trials = set()
    for folder, name in RUNS.items():
        results = json.loads((logs / folder / "results.json").read_text())
        members = results["members"]
        run = runs.GetAccumulator(name)
        start = metadata.parse_session_start_info_plugin_data(
            run.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
        values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert values["optim"] == "adam" and values["trainer.epochs"] == 3
        assert values["optim.lr"] == {"sweep/0": 0.01, "sweep/1": 0.001}.get(folder, 0.001)
        trials.add(start.group_name)
        run_dir = logs / folder
        assert start.group_name == f"{run_dir.name} · {run_dir.parent.name}"  # short: the HPARAMS tab cuts it
        # The headline as a level line over the epochs (two points), apart from the per-epoch curves.
        for tag, value in (("headline/val/accuracy", results["validation"]["val/accuracy"]["mean"]),
                           ("headline/test/accuracy", results["metrics"]["test/accuracy"]["mean"])):
            assert [(e.step, e.value) for e in run.Scalars(tag)] == [(0, pytest.approx(value, abs=1e-7)),
                                                                     (2, pytest.approx(value, abs=1e-7))]
        history = pd.read_csv(logs / folder / "metrics.csv")
        assert members == history["member"].nunique() == (2 if folder != "kfold" else 3)
        for m in range(members):
            assert [e.value for e in run.Scalars(f"members/val/loss/{m}")] == pytest.approx(
                history.query("member == @m")["val/loss"].tolist(), rel=1e-6)
        mean = history.groupby("epoch")["val/loss"].mean()
        assert [e.value for e in run.Scalars("val/loss")] == pytest.approx(mean.tolist(), rel=1e-6)
        assert [e.value for e in run.Scalars("spread/val/loss/max")] == pytest.approx(
            history.groupby("epoch")["val/loss"].max().tolist(), rel=1e-6)
    assert len(trials) == 3


def test_a_live_tensorboard_shows_one_run_per_experiment_its_spread_and_distinct_trials(logs):  # 127.0.0.1: 1-2 s
    import json
    import re
    import subprocess
    import sys
    import time
    import urllib.parse
    import urllib.request
    from pathlib import Path

    server = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(logs), "--host",
                               "127.0.0.1", "--port", "0", "--load_fast=false"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        while url is None:
            line = server.stderr.readline()
            assert line, "tensorboard exited"
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = found and found.group(0)

        def get(path, body=None):
            request = urllib.request.Request(url + path, None if body is None else json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 60
        while len(get("data/runs")) < len(RUNS) and time.monotonic() < deadline:  # it loads in the background
            time.sleep(0.5)
        assert sorted(get("data/runs")) == sorted(RUNS.values())  # no run per member
        tags = get("data/plugin/scalars/tags")
        kfold = set(tags[RUNS["kfold"]])
        assert {"val/loss", "spread/val/loss/min", "spread/val/loss/max", "headline/test/accuracy"} <= kfold
        assert {f"members/val/accuracy/{m}" for m in range(3)} <= kfold
        layout = get("data/plugin/custom_scalars/layout")
        # The same layout from every run, merged into one: the members' band, then each member's curve.
        assert [c["title"] for c in layout["category"]] == ["members' mean, min and max", "each member"]
        charts = {c["title"]: c for category in layout["category"] for c in category["chart"]}
        assert charts["val/loss: members' mean, min and max"]["margin"]["series"] == [
            {"value": "val/loss", "lower": "spread/val/loss/min", "upper": "spread/val/loss/max"}]
        query = urllib.parse.urlencode({"run": RUNS["kfold"], "tag": charts["val/loss: each member"]["multiline"][
            "tag"][0]})
        drawn = get(f"data/plugin/custom_scalars/scalars?{query}")
        assert sorted(drawn["tag_to_events"]) == [f"members/val/loss/{m}" for m in range(3)]
        experiment = get("data/plugin/hparams/experiment", {"experimentName": ""})
        assert {"optim", "optim.lr", "eval", "trainer.seeds"} <= {h["name"] for h in experiment["hparamInfos"]}
        groups = get("data/plugin/hparams/session_groups", {"startIndex": 0, "sliceSize": 10, "allowedStatuses": [
            "STATUS_SUCCESS"], "colParams": [{"hparam": "optim.lr"}, {"metric": {"tag": "headline/test/accuracy"}}]})
        trials = {g["name"]: g for g in groups["sessionGroups"]}  # the Trial IDs
        assert sorted(trials) == sorted(f"{(logs / f).name} · {(logs / f).parent.name}" for f in RUNS)
        assert all(len(g["sessions"]) == 1 for g in trials.values())
        # Every run's keys (the kfold run's eval.k, the sweep's optim.lr), those that set a run apart first.
        infos = [h["name"] for h in experiment["hparamInfos"]]
        assert {"optim.lr", "eval.k", "model.hidden", "aug.mixup"} <= set(infos) and infos[0] == "dataset"
        for folder, name in RUNS.items():
            test = json.loads((logs / folder / "results.json").read_text())["metrics"]["test/accuracy"]["mean"]
            [group] = [g for t, g in trials.items() if t == f"{(logs / folder).name} · {(logs / folder).parent.name}"]
            [value] = [m["value"] for m in group["metricValues"] if m["name"]["tag"] == "headline/test/accuracy"]
            assert value == pytest.approx(test, abs=1e-6)
    finally:
        server.kill()
        server.wait()
