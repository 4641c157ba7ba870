"""Every file runner writes goes through one helper (rundir.folder.write_atomic): a link planted at a temporary
name the old writers used, or at the file itself, is never written through."""

import json
import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from runner.engine.checkpoint import save_checkpoint
from runner.engine.resume import FitCheckpoint
from runner.rundir import artifacts, events
from runner.rundir.folder import write_atomic
from runner.sweeps.search import write_trials


def _checkpoint(path):
    model = SimpleNamespace(slots={"w": SimpleNamespace(shape=(2, 3), offset=0, kernel=False)})
    save_checkpoint(path, torch.arange(12.0).reshape(2, 6), torch.zeros(2, 0), model, [{"member": 0}], {"k": 7})
    return torch.load(path, weights_only=True)["flat"].sum().item(), 66.0


def _fit_state(path):
    FitCheckpoint(path).save({"epoch": 4, "w": torch.ones(3)})
    return torch.load(path, weights_only=True)["epoch"], 4


def _json(path):
    artifacts.write_json(path, [{"member": 0, "train": [1, 2]}])
    return json.loads(path.read_text()), [{"member": 0, "train": [1, 2]}]


def _trials(path):
    trial = SimpleNamespace(number=3, state=SimpleNamespace(name="COMPLETE"), value=0.25, params={"optim.lr": 0.01},
                            user_attrs={"job_dir": "sw/3"})
    write_trials(SimpleNamespace(trials=[trial]), path)
    return pd.read_csv(path).iloc[0].tolist(), [3, "COMPLETE", 0.25, 0.01, "sw/3"]


# Each writer, its file, and the fixed temporary name it used to write through.
WRITERS = {"save_checkpoint": (_checkpoint, "checkpoints/best.pt", "checkpoints/best.pt.tmp"),
           "FitCheckpoint.save": (_fit_state, "checkpoints/fit_state.pt", "checkpoints/fit_state.pt.tmp"),
           "artifacts.write_json": (_json, "split_indices.json", "split_indices.json.tmp"),
           "search.write_trials": (_trials, "trials.csv", "trials.csv.tmp")}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_link_at_the_old_fixed_temporary_name_is_not_followed(tmp_path, writer):
    write, name, old_tmp = WRITERS[writer]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "checkpoints").mkdir()
    link = tmp_path / old_tmp
    link.symlink_to(victim)
    got, expected = write(tmp_path / name)
    assert got == expected
    assert victim.read_text() == "keep me\n"  # the link's target is unchanged
    assert link.is_symlink() and os.readlink(link) == str(victim)  # and the link left alone
    assert not (tmp_path / name).is_symlink()
    leftovers = [p.name for p in (tmp_path / name).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary file outlives the write


def test_a_link_at_the_file_itself_is_replaced_not_written_through(tmp_path):
    victim, path = tmp_path / "victim.txt", tmp_path / "events.out.tfevents.1"
    victim.write_text("keep me\n")
    path.symlink_to(victim)
    events.write_scalars(path, 1.0, [0], [{"val/loss": 0.5}])  # it used to open(path, "wb"), following the link
    assert victim.read_text() == "keep me\n" and not path.is_symlink()
    expected = events.record(events.event(1.0, file_version=events.FILE_VERSION))
    expected += events.record(events.event(1.0, 0, {"val/loss": 0.5}))
    assert path.read_bytes() == expected


def test_write_atomic_takes_a_writer_and_keeps_the_old_file_when_it_fails(tmp_path):
    path = tmp_path / "metrics.csv"
    write_atomic(path, lambda file: pd.DataFrame({"epoch": [0, 1], "lr": [0.1, 0.05]}).to_csv(file, index=False))
    assert path.read_text() == "epoch,lr\n0,0.1\n1,0.05\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def half_then_fail(file):
        file.write(b"epoch,")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "epoch,lr\n0,0.1\n1,0.05\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
