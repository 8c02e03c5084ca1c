"""carseg.training.checkpoint_io: checkpoints written atomically, a full disk named, and every
checkpoint Lightning loads read through the safe reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from carseg.training.checkpoint_io import AtomicCheckpointIO
from carseg.utils.errors import DataError, DiskFullError


def test_checkpoint_write_interrupted_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, path)

    def dies_halfway(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["weights"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    import shutil

    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, path)

    def no_space(obj, f):  # what torch's zip writer raises when the disk fills mid-write
        Path(f).write_bytes(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/3: file write failed")  # fmt: skip

    monkeypatch.setattr(torch, "save", no_space)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(DiskFullError) as err:
        io.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert "No space left" in str(err.value) and "paths.log_dir" in str(err.value)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


@pytest.mark.parametrize("force", [None, "1"])
def test_what_lightning_loads_goes_through_the_safe_reader(tmp_path, monkeypatch, force):
    """Lightning's own loading (a resume, a SLURM checkpoint) asks the plugin: a pickled payload
    is refused unrun, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the environment."""
    monkeypatch.chdir(tmp_path)
    if force:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", force)
    torch.save({"epoch": 1, "x": _Payload()}, tmp_path / "hpc_ckpt_1.ckpt")
    with pytest.raises(DataError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", weights_only=False)
    assert not (tmp_path / "PWNED").exists()
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 2, "w": torch.ones(2)}, tmp_path / "good.ckpt")
    assert io.load_checkpoint(tmp_path / "good.ckpt")["epoch"] == 2


def test_torchs_other_words_for_a_full_disk_are_named_too(tmp_path, monkeypatch):
    """With no logger the zip writer reports a short write as "unexpected pos"."""
    import shutil

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, path)

    def short_write(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 640 vs 512")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(DiskFullError, match="No space left"):
        io.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_torchs_failed_write_with_room_left_is_not_called_a_full_disk(tmp_path, monkeypatch):
    import shutil

    def fails(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")  # fmt: skip

    monkeypatch.setattr(torch, "save", fails)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="PytorchStreamWriter") as err:
        AtomicCheckpointIO().save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
    assert not isinstance(err.value, DiskFullError)
    assert list(tmp_path.iterdir()) == []  # no temporary left behind
