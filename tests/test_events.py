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
