"""TensorBoard event files of scalars, written without importing tensorboard or protobuf.

An event file is a sequence of TFRecords (length, masked CRC32C of the length, data, masked CRC32C
of the data), each holding one serialized `Event` protobuf. A scalar needs only five fields of two
messages, encoded here by hand; tests check the bytes against tensorboard's own protos and read the
files back with tensorboard's loader. The hparams plugin's three summaries (experiment, session start
and end) are encoded the same way. Importing tensorboard's writer and protos cost ~0.1 s, and its
pure-Python CRC and writer thread 0.5 s for 50 members' curves.
"""

import functools
import struct

import google_crc32c

from runner.rundir.folder import write_atomic

FILE_VERSION = b"brain.Event:2"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): string or embedded message."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int = 0, scalars: dict[str, float] | None = None,
          file_version: bytes | None = None, summary: bytes = b"") -> bytes:
    """A serialized tensorboard `Event`: wall_time (1), step (2), file_version (3), summary (5) of simple values
    or, given `summary`, of those already encoded Summary.Value fields."""
    out = b"\x09" + struct.pack("<d", wall_time)  # field 1, 64-bit
    if step:  # proto3 leaves a zero out, as the official encoder does
        out += b"\x10" + _varint(step & 0xFFFFFFFFFFFFFFFF)  # field 2, varint (int64, two's complement)
    if file_version is not None:
        out += _field(3, file_version)
    if scalars:
        # Summary.value (1) is repeated Summary.Value {tag (1): string, simple_value (2): float32}.
        summary += b"".join(_value_head(tag) + struct.pack("<f", value) for tag, value in scalars.items())
    if summary:
        out += _field(5, summary)
    return out


@functools.cache
def _value_head(tag: str) -> bytes:
    """A Summary.Value field up to its 4 float bytes: the same for every step of a tag, so built once."""
    body = _field(1, tag.encode()) + b"\x15"  # tag, then the key of simple_value (field 2, 32-bit)
    return _varint(1 << 3 | 2) + _varint(len(body) + 4) + body


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, its masked CRC32C, the data, the data's masked CRC32C (little-endian)."""
    header = struct.pack("<Q", len(data))
    return header + _masked_crc(header) + data + _masked_crc(data)


def write_scalars(path, wall_time: float, steps: list[int], scalars: list[dict[str, float]],
                  summary: bytes = b"") -> None:
    """An event file at `path`: the file-version event, an event of `summary` (encoded Summary.Value fields, if
    any), then one event per step with that step's scalars."""
    parts = [record(event(wall_time, file_version=FILE_VERSION))]
    parts += [record(event(wall_time, summary=summary))] if summary else []
    parts += [record(event(wall_time, step, values)) for step, values in zip(steps, scalars)]

    write_atomic(path, b"".join(parts))


def _hparam_value(value: float | str | bool) -> tuple[bytes, int]:
    """A google.protobuf.Value (number 2, string 3, bool 4) and the hparams DataType (FLOAT64 3, STRING 1, BOOL 2)."""
    if isinstance(value, bool):
        return b"\x20" + _varint(int(value)), 2
    if isinstance(value, (int, float)):
        return b"\x11" + struct.pack("<d", value), 3
    return _field(3, str(value).encode()), 1


def _plugin_value(tag: str, content: bytes) -> bytes:
    """A Summary.Value (1) with its tag (1) and only metadata (9): plugin_data (1) {plugin_name (1), content (2)}."""
    plugin_data = _field(1, b"hparams") + _field(2, content)
    return _field(1, _field(1, tag.encode()) + _field(9, _field(1, plugin_data)))


def hparams_summaries(hparams: dict[str, float | str | bool], metrics: list[str], start_s: float,
                      end_s: float, trial: str = "", differs=()) -> list[bytes]:
    """The hparams plugin's three summaries (as `torch.utils.tensorboard.summary.hparams` builds them), each
    the Summary.Value fields of one event: the experiment (hyperparameter names and types, metric tags), the
    session start (the values; `trial`, the session group's name, is the HPARAMS tab's Trial ID, the run's path
    when empty), the session end (status success); the experiment marks the hyperparameters in `differs` as
    differing (the HPARAMS tab lists those first). HParamsPluginData: version 0 (1, left out), experiment (2),
    session_start_info (3), session_end_info (4)."""
    values = {name: _hparam_value(v) for name, v in hparams.items()}
    # Experiment: hparam_infos (4) {name (1), type (4), differs (7)}, metric_infos (5) {name (1): MetricName
    # {tag (2)}}.
    experiment = b"".join(_field(4, _field(1, name.encode()) + b"\x20" + _varint(kind) + (b"\x38\x01" if name in
                                                                                         differs else b""))
                          for name, (_, kind) in values.items())
    experiment += b"".join(_field(5, _field(1, _field(2, tag.encode()))) for tag in metrics)
    # SessionStartInfo: hparams (1) map<string, Value> entries {key (1), value (2)}, group_name (4),
    # start_time_secs (5).
    start = b"".join(_field(1, _field(1, name.encode()) + _field(2, value)) for name, (value, _) in values.items())
    start += (_field(4, trial.encode()) if trial else b"") + b"\x29" + struct.pack("<d", start_s)
    end = b"\x08\x01" + b"\x11" + struct.pack("<d", end_s)  # status (1) = STATUS_SUCCESS, end_time_secs (2)
    return [_plugin_value("_hparams_/experiment", _field(2, experiment)),
            _plugin_value("_hparams_/session_start_info", _field(3, start)),
            _plugin_value("_hparams_/session_end_info", _field(4, end))]


def margin_layout(tags: list[str], band: str, members: str) -> bytes:
    """The custom scalars plugin's layout (its CUSTOM SCALARS tab) as one Summary.Value: a category of margin
    charts, each tag between `band`'s lower and upper tags (`band.format(tag=..., bound="min"|"max")`), and one of
    charts of every tag matching `members` (a regex, `members.format(tag=...)`). Layout: category (2) {title (1),
    chart (2) {title (1), multiline (2) {tag (1)}, margin (3) {series (1) {value (1), lower (2), upper (3)}}}}."""
    margins = members_charts = b""
    for tag in tags:
        series = _field(1, tag.encode()) + _field(2, band.format(tag=tag, bound="min").encode()) + _field(
            3, band.format(tag=tag, bound="max").encode())
        margins += _field(2, _field(1, f"{tag}: members' mean, min and max".encode()) + _field(3, _field(1, series)))
        members_charts += _field(2, _field(1, f"{tag}: each member".encode()) + _field(2, _field(
            1, members.format(tag=tag).encode())))
    layout = _field(2, _field(1, b"members' mean, min and max") + margins) + _field(
        2, _field(1, b"each member") + members_charts)
    return _string_tensor("custom_scalars__config__", b"custom_scalars", layout)


def _string_tensor(tag: str, plugin: bytes, content: bytes) -> bytes:
    """A Summary.Value (1): tag (1), metadata (9) {plugin_data (1) {plugin_name (1)}}, tensor (8) of one string
    (TensorProto: dtype (1) DT_STRING = 7, tensor_shape (2) of no dims, string_val (8))."""
    tensor = b"\x08\x07" + _field(2, b"") + _field(8, content)
    return _field(1, _field(1, tag.encode()) + _field(9, _field(1, _field(1, plugin))) + _field(8, tensor))
