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
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"member": np.repeat([0, 1], 3), "epoch": np.tile([0, 1, 2], 2),
                          "train/loss": rng.uniform(size=6), "val/loss": rng.uniform(size=6), "lr": 0.01})
    frame.loc[5, "val/loss"] = np.nan  # a value never logged is left out, not written as NaN
    write_tensorboard(tmp_path, frame)
    for member in (0, 1):
        [path] = (tmp_path / f"member_{member}").iterdir()
        read = list(EventFileLoader(str(path)).Load())
        assert read[0].file_version == "brain.Event:2"
        got = {(e.step, v.tag): v for e in read[1:] for v in e.summary.value}
        rows = frame[frame.member == member]
        want = {(int(r["epoch"]), tag): r[tag] for _, r in rows.iterrows()
                for tag in ("train/loss", "val/loss", "lr") if r[tag] == r[tag]}
        assert set(got) == set(want)
        for key, value in want.items():  # the loader gives scalars as tensors, float32
            assert got[key].tensor.float_val[0] == pytest.approx(value, rel=1e-6)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-job sweep over optim.lr, two seeds each."""
    from runner.commands.cli import main

    sweep = tmp_path_factory.mktemp("tensorboard") / "s"
    assert main(["train", "-m", "optim.lr=0.01,0.001", "trainer.epochs=3", "trainer.seeds=2", "trainer.progress=false",
                 "plots=false", f"hydra.sweep.dir={sweep}"]) == 0
    return sweep


def test_a_sweeps_runs_are_named_by_their_overrides_with_hparams_apart_from_the_curves(sweep):
    import json

    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep))
    runs.Reload()
    for job, lr in (("0", "0.01"), ("1", "0.001")):
        name = f"{job}/tensorboard/optim.lr={lr},trainer.epochs=3,trainer.seeds=2"
        assert {r for r in runs.Runs() if r.startswith(job + "/")} == {name, f"{name}/member_0", f"{name}/member_1"}
        results = json.loads((sweep / job / "results.json").read_text())
        session = runs.GetAccumulator(name)
        start = metadata.parse_session_start_info_plugin_data(
            session.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
        values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert values["optim.lr"] == float(lr) and values["optim"] == "adam" and values["trainer.seeds"] == 2
        headline = {tag: session.Scalars(tag)[0].value for tag in session.Tags()["scalars"]}
        assert headline == pytest.approx({"headline/val/accuracy": results["validation"]["val/accuracy"]["mean"],
                                          "headline/test/accuracy": results["metrics"]["test/accuracy"]["mean"]},
                                         abs=1e-7)
        curves = runs.GetAccumulator(f"{name}/member_1")
        assert set(curves.Tags()["scalars"]) == {"train/loss", "val/loss", "val/accuracy", "lr"}
        assert not set(headline) & set(curves.Tags()["scalars"])  # no tag of the record on a per-epoch chart
        history = pd.read_csv(sweep / job / "metrics.csv").query("member == 1")
        assert [e.value for e in curves.Scalars("val/loss")] == pytest.approx(history["val/loss"].tolist(), rel=1e-6)


def test_a_live_tensorboard_lists_the_sweep_in_its_hparams_tab(sweep):  # a server on 127.0.0.1: 1-2 s
    import json
    import re
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    server = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(sweep), "--host",
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
        while len(get("data/runs")) < 6 and time.monotonic() < deadline:  # it loads the logdir in the background
            time.sleep(0.5)
        names = {"0": "0/tensorboard/optim.lr=0.01,trainer.epochs=3,trainer.seeds=2",
                 "1": "1/tensorboard/optim.lr=0.001,trainer.epochs=3,trainer.seeds=2"}
        assert set(get("data/runs")) == {f"{n}{m}" for n in names.values() for m in ("", "/member_0", "/member_1")}
        tags = get("data/plugin/scalars/tags")
        assert set(tags[names["0"]]) == {"headline/val/accuracy", "headline/test/accuracy"}
        assert set(tags[names["0"] + "/member_0"]) == {"train/loss", "val/loss", "val/accuracy", "lr"}
        experiment = get("data/plugin/hparams/experiment", {"experimentName": ""})
        assert {"optim", "optim.lr", "trainer.seeds"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert [m["name"]["tag"] for m in experiment["metricInfos"]] == ["headline/val/accuracy",
                                                                          "headline/test/accuracy"]
        groups = get("data/plugin/hparams/session_groups", {"startIndex": 0, "sliceSize": 10, "allowedStatuses": [
            "STATUS_SUCCESS"], "colParams": [{"hparam": "optim.lr"}, {"metric": {"tag": "headline/test/accuracy"}}]})
        by_lr = {g["hparams"]["optim.lr"]: g for g in groups["sessionGroups"]}
        assert set(by_lr) == {0.01, 0.001}
        for job, lr in (("0", 0.01), ("1", 0.001)):
            test = json.loads((sweep / job / "results.json").read_text())["metrics"]["test/accuracy"]["mean"]
            [value] = [m["value"] for m in by_lr[lr]["metricValues"] if m["name"]["tag"] == "headline/test/accuracy"]
            assert value == pytest.approx(test, abs=1e-6)
    finally:
        server.kill()
        server.wait()
