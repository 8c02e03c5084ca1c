"""Faults during training: a kill mid-epoch, a kill while writing a checkpoint, a NaN loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from carseg.training.checkpoint_io import AtomicCheckpointIO, DiskFullError, resolve_resume
from carseg.utils.errors import ConfigError, DataError, TrainingDivergedError
from carseg.training.train import train
from helpers import REPO, TINY_TRAIN, run_script


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


def resolve_ckpt_path(ckpt_path, output_dir, runs_dir):
    return resolve_resume(ckpt_path, output_dir, runs_dir, model_hparams={}, max_epochs=None)


def test_resolve_last_finds_the_newest_run_and_refuses_nothing(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="nothing to resume"):
        resolve_ckpt_path("last", tmp_path / "new", runs)
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (runs / name / "checkpoints").mkdir(parents=True)
        torch.save({"epoch": 0}, runs / name / "checkpoints" / "last.ckpt")
        time.sleep(0.01)
    found = resolve_ckpt_path("last", tmp_path / "new", runs)
    assert found == str(runs / "2026-01-02_00-00-00" / "checkpoints" / "last.ckpt")
    # restarted in its own folder (hydra.run.dir=...): that folder's last.ckpt wins
    own = runs / "2026-01-01_00-00-00"
    assert resolve_ckpt_path("last", own, runs) == str(own / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(None, own, runs) is None


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_resuming_from_a_booby_trapped_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"epoch": 3, "payload": _Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(DataError, match="refused"):
        resolve_ckpt_path(str(tmp_path / "evil.ckpt"), tmp_path, tmp_path)
    assert not (tmp_path / "PWNED").exists()


def _compose(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY_TRAIN,
                f"paths.root_dir={tmp_path}",
                f"paths.output_dir={tmp_path / 'run'}",
                "logger=none",
                "callbacks.progress_bar=null",
                *overrides,
            ],
        )
    OmegaConf.set_struct(cfg, False)
    return cfg


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = _compose(tmp_path, "trainer.max_epochs=4")
    cfg.callbacks.poison = {"_target_": "helpers.poison_batch_callback", "epoch": 1, "batch": 1}
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg)
    message = str(err.value)
    assert "became nan at epoch 1, batch 1" in message and "model.lr" in message
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint is kept: {last}" in message
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0  # from before the bad step
    assert all(
        torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point()
    )


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint_and_finishes_its_epochs(tmp_path):
    settings = [
        *TINY_TRAIN,
        "data.synthetic.n_cars=4",
        "data.size=[64,96]",
        "trainer.max_epochs=5",
        "callbacks.early_stopping=null",
    ]
    env = {**os.environ, "CARSEG_ROOT": str(tmp_path), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "src" / "train.py"), *settings],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = tmp_path / "outputs" / "train" / "runs"
    killed_at = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            lasts = list(runs.glob("*/checkpoints/last.ckpt"))
            if lasts:
                epoch = torch.load(lasts[0], weights_only=True)["epoch"]
                if epoch >= 1:
                    time.sleep(0.3)  # into the next epoch
                    proc.send_signal(signal.SIGKILL)
                    killed_at = epoch
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL
    (first_run,) = runs.iterdir()
    saved = torch.load(first_run / "checkpoints" / "last.ckpt", weights_only=True)  # whole
    assert saved["epoch"] >= killed_at

    resumed = run_script(tmp_path, "train", *settings, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming training from" in resumed.stdout + resumed.stderr
    second_run = next(p for p in runs.iterdir() if p != first_run)
    final = torch.load(second_run / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = final["global_step"] // 5
    assert final["epoch"] == 4 and final["global_step"] == 5 * steps_per_epoch
    # it went on from the checkpoint: it validated only the epochs that were left
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(second_run / "tensorboard"))
    events.Reload()
    epochs_done_here = len(events.Scalars("val/dice"))
    assert epochs_done_here == 5 - (saved["epoch"] + 1)


def test_last_checkpoint_is_the_newest_epoch_even_when_dice_did_not_improve(tmp_path):
    """checkpoints/last.ckpt follows every epoch (Lightning 2.6's save_last would keep only the
    epochs that improved val/dice, and a resume would train the others again)."""
    # a threshold no untrained pixel reaches: val/dice stays 0, so epoch 0 stays the best
    cfg = _compose(tmp_path, "trainer.max_epochs=3", "model.threshold=0.999")
    result = train(cfg)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert result.best_epoch == 0 and last["epoch"] == 2


def test_the_checkpoint_records_the_split_and_a_resume_with_another_one_is_refused(tmp_path):
    train(_compose(tmp_path, "trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    record = torch.load(last, weights_only=True)["CarvanaDataModule"]["split"]
    assert record["split_seed"] == 42 and record["val_cars"] and record["train_cars"]
    assert not set(record["val_cars"]) & set(record["train_cars"])
    again = _compose(tmp_path, "trainer.max_epochs=2", f"ckpt_path={last}", "data.val_fraction=0.5")
    with pytest.raises(ConfigError, match="another split by car") as err:
        train(again)
    assert "data.split_seed=42" in str(err.value)


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


def _saved(path: Path, epoch: int, processed: int | None) -> Path:
    raw = {"epoch": epoch, "hyper_parameters": {}}
    if processed is not None:
        raw["loops"] = {"fit_loop": {"epoch_progress": {"current": {"processed": processed}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, path)
    return path


def test_a_checkpoint_saved_inside_an_epoch_has_that_epoch_left_to_train(tmp_path):
    """Lightning's SLURM checkpoint (and a max_time stop) is saved inside the epoch it names."""
    inside = _saved(tmp_path / "hpc_ckpt_1.ckpt", epoch=29, processed=29)
    assert resolve_resume(str(inside), tmp_path, tmp_path, {}, max_epochs=30) == str(inside)
    ended = _saved(tmp_path / "last.ckpt", epoch=29, processed=30)
    with pytest.raises(ConfigError, match="already trained 30 epoch"):
        resolve_resume(str(ended), tmp_path, tmp_path, {}, max_epochs=30)


def test_a_requeued_job_goes_on_from_its_own_newest_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    older = _saved(tmp_path / "elsewhere" / "last.ckpt", epoch=0, processed=1)
    last = _saved(run / "checkpoints" / "last.ckpt", epoch=3, processed=4)
    time.sleep(0.01)
    hpc = _saved(run / "hpc_ckpt_1.ckpt", epoch=4, processed=4)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    # whatever the command names, the job's own newest checkpoint is where it stopped
    assert resolve_resume(str(older), run, tmp_path, {}, max_epochs=10) == str(hpc)
    assert resolve_resume(None, run, tmp_path, {}, max_epochs=10) == str(hpc)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resolve_resume(None, run, tmp_path, {}, max_epochs=10) is None
    assert resolve_resume("last", run, tmp_path, {}, max_epochs=10) == str(last)


def test_nan_in_an_accumulated_batch_names_that_batch(tmp_path):
    cfg = _compose(tmp_path, "trainer.max_epochs=2", "+trainer.accumulate_grad_batches=2")
    cfg.callbacks.poison = {"_target_": "helpers.poison_batch_callback", "epoch": 0, "batch": 0}
    with pytest.raises(TrainingDivergedError, match="became nan at epoch 0, batch 0"):
        train(cfg)
