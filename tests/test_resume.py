"""carseg.training.resume: which checkpoint a run continues from, refused before Lightning starts
when it is missing, foreign, booby-trapped, of another network or split, or has nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from carseg.training.checkpoint_reader import RECORD_KEY
from carseg.training.resume import finished_epochs, resolve_resume, seconds, trained_seconds
from carseg.training.train import train
from carseg.utils.errors import ConfigError, DataError
from support.configs import compose_train
from support.entry import REPO, TINY_TRAIN, run_script


def _resume(*args, max_time=None, max_steps=-1, **options):
    """``resolve_resume`` without a time or step budget unless a test gives one."""
    return resolve_resume(*args, max_time=max_time, max_steps=max_steps, **options)


def _saved(path: Path, epoch: int, processed: int | None, net: dict | None = None) -> Path:
    """A checkpoint with carseg's record (of ``net``) and the loops' progress."""
    record = {"format": 1, "model": {"net": net or {}}, "size": None, "threshold": 0.5}
    raw = {"epoch": epoch, "hyper_parameters": {}, RECORD_KEY: {**record, "split": None}}
    if processed is not None:
        raw["loops"] = {"fit_loop": {"epoch_progress": {"current": {"processed": processed}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, path)
    return path


def resolve_ckpt_path(ckpt_path, output_dir, runs_dir):
    point = _resume(ckpt_path, output_dir, runs_dir, model_hparams={}, max_epochs=None)
    return None if point is None else point.path


def test_resolve_last_finds_the_newest_run_and_refuses_nothing(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="nothing to resume"):
        resolve_ckpt_path("last", tmp_path / "new", runs)
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        _saved(runs / name / "checkpoints" / "last.ckpt", epoch=0, processed=1)
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


def test_a_plain_state_dict_or_another_projects_checkpoint_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(DataError, match="not a carseg training checkpoint"):
        resolve_ckpt_path(str(tmp_path / "weights.pt"), tmp_path, tmp_path)


def test_a_checkpoint_of_another_network_is_refused_naming_what_differs(tmp_path):
    net = {"_target_": "carseg.models.unet.UNet", "base_width": 8, "depth": 3}
    path = _saved(tmp_path / "a.ckpt", epoch=0, processed=1, net=net)
    wanted = {"net": {**net, "base_width": 16}}
    with pytest.raises(ConfigError, match="model.net.base_width=8.*model.net.base_width=16"):
        _resume(str(path), tmp_path, tmp_path, wanted, max_epochs=None)
    # how a net is first initialised is not its shape: another weights file resumes
    again = {"net": {**net, "encoder_weights": "/elsewhere.pth"}}
    assert _resume(str(path), tmp_path, tmp_path, again, max_epochs=None) is not None


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint_and_finishes_its_epochs(tmp_path):
    settings = [
        *TINY_TRAIN,
        "data.synthetic.n_cars=4",
        "data.size=[64,96]",
        "trainer.max_epochs=5",
        "callbacks.early_stopping=null",
    ]
    env = {**os.environ, "CARSEG_ROOT": str(tmp_path)}
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


def test_the_checkpoint_records_the_split_and_a_resume_with_another_one_is_refused(tmp_path):
    train(compose_train(tmp_path, "trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    record = torch.load(last, weights_only=True)[RECORD_KEY]["split"]
    assert record["split_seed"] == 42 and record["val_cars"] and record["train_cars"]
    assert not set(record["val_cars"]) & set(record["train_cars"])
    again = compose_train(
        tmp_path, "trainer.max_epochs=2", f"ckpt_path={last}", "data.val_fraction=0.5"
    )
    with pytest.raises(ConfigError, match="another split by car") as err:
        train(again)
    assert "data.split_seed=42" in str(err.value)


def test_a_checkpoint_saved_inside_an_epoch_has_that_epoch_left_to_train(tmp_path):
    """Lightning's SLURM checkpoint (and a max_time stop) is saved inside the epoch it names."""
    inside = _saved(tmp_path / "hpc_ckpt_1.ckpt", epoch=29, processed=29)
    assert _resume(str(inside), tmp_path, tmp_path, {}, max_epochs=30).path == str(inside)
    ended = _saved(tmp_path / "last.ckpt", epoch=29, processed=30)
    with pytest.raises(ConfigError, match="already trained 30 epoch"):
        _resume(str(ended), tmp_path, tmp_path, {}, max_epochs=30)


def test_a_requeued_job_goes_on_from_its_own_newest_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    older = _saved(tmp_path / "elsewhere" / "last.ckpt", epoch=0, processed=1)
    last = _saved(run / "checkpoints" / "last.ckpt", epoch=3, processed=4)
    time.sleep(0.01)
    hpc = _saved(run / "hpc_ckpt_1.ckpt", epoch=4, processed=4)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    # whatever the command names, the job's own newest checkpoint is where it stopped
    assert _resume(str(older), run, tmp_path, {}, max_epochs=10).path == str(hpc)
    assert _resume(None, run, tmp_path, {}, max_epochs=10).path == str(hpc)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert _resume(None, run, tmp_path, {}, max_epochs=10) is None
    assert _resume("last", run, tmp_path, {}, max_epochs=10).path == str(last)


def test_weights_that_do_not_fit_the_model_are_refused_naming_one(tmp_path):
    net = {"_target_": "carseg.models.unet.UNet", "base_width": 8}
    path = _saved(tmp_path / "a.ckpt", epoch=0, processed=1, net=net)
    raw = torch.load(path, weights_only=True)
    raw["state_dict"] = {"net.inc.weight": torch.zeros(8, 3, 3, 3), "other.bias": torch.zeros(2)}
    torch.save(raw, path)
    wanted = {"net.inc.weight": torch.zeros(16, 3, 3, 3), "net.outc.bias": torch.zeros(1)}
    with pytest.raises(ConfigError, match=r"net.inc.weight is \(8, 3, 3, 3\) there") as err:
        _resume(str(path), tmp_path, tmp_path, {"net": net}, None, model_state=wanted)
    assert "1 missing, 1 unexpected, 1 of another shape" in str(err.value)


class _HpcPayload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_the_checkpoint_lightnings_slurm_resume_would_load_is_checked_first(tmp_path, monkeypatch):
    """Under SLURM (SLURM_NTASKS, a job name) Lightning goes on from the run folder's
    hpc_ckpt_*.ckpt by itself: carseg resumes from it explicitly, through the safe reader, with
    or without SLURM_RESTART_COUNT, even if TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    good = _saved(run / "hpc_ckpt_1.ckpt", epoch=2, processed=2)
    assert _resume(None, run, tmp_path, {}, max_epochs=10).path == str(good)
    torch.save({"epoch": 3, "x": _HpcPayload()}, run / "hpc_ckpt_2.ckpt")
    os.utime(run / "hpc_ckpt_2.ckpt", ns=(10**19, 10**19))  # the newest
    with pytest.raises(DataError, match="refused"):
        _resume(None, run, tmp_path, {}, max_epochs=10)
    assert not (tmp_path / "PWNED").exists()


def _with_progress(path: Path, started: int, processed: int, last_batch: bool, **raw) -> Path:
    """A checkpoint whose loops say how far its epoch went, and ``raw``'s other keys."""
    record = {"format": 1, "model": {"net": {}}, "size": None, "threshold": 0.5, "split": None}
    progress = {"current": {"started": started, "processed": processed}}
    loops = {"epoch_progress": progress, "epoch_loop.batch_progress": {"is_last_batch": last_batch}}
    torch.save({"epoch": processed, RECORD_KEY: record, "loops": {"fit_loop": loops}, **raw}, path)
    return path


def test_an_epoch_is_finished_when_its_last_batch_was_validated_not_before(tmp_path):
    """A checkpoint saved by the validation after an epoch's last batch (before Lightning closed
    the epoch) has finished it; one saved by a stop inside the epoch has not."""
    at_end = _with_progress(tmp_path / "a.ckpt", started=2, processed=1, last_batch=True)
    inside = _with_progress(tmp_path / "b.ckpt", started=2, processed=1, last_batch=False)
    closed = _with_progress(tmp_path / "c.ckpt", started=2, processed=2, last_batch=True)
    done = [finished_epochs(torch.load(p, weights_only=True)) for p in (at_end, inside, closed)]
    assert done == [2, 1, 2]
    with pytest.raises(ConfigError, match="already trained 2 epoch"):
        _resume(str(at_end), tmp_path, tmp_path, {}, max_epochs=2)
    assert _resume(str(inside), tmp_path, tmp_path, {}, max_epochs=2).path == str(inside)


def test_a_run_goes_on_with_what_is_left_of_its_time_budget_or_is_refused(tmp_path):
    timer = {"Timer": {"time_elapsed": {"train": 300.5, "validate": 0.0}}}
    half = _with_progress(tmp_path / "half.ckpt", 1, 0, False, callbacks=timer, global_step=7)
    raw = torch.load(half, weights_only=True)
    assert trained_seconds(raw) == 300.5 and seconds("00:00:10:00") == 600
    assert _resume(str(half), tmp_path, tmp_path, {}, None, max_time="00:00:10:00")
    with pytest.raises(ConfigError, match="5.0 minutes.*trainer.max_time=00:00:05:00.*Raise"):
        _resume(str(half), tmp_path, tmp_path, {}, None, max_time="00:00:05:00")
    with pytest.raises(ConfigError, match="already trained 7 step.*trainer.max_steps=7"):
        _resume(str(half), tmp_path, tmp_path, {}, None, max_steps=7)
