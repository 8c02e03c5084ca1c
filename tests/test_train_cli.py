"""``python src/train.py`` as a user runs it: a real subprocess, Hydra's command line and all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from carseg.training.segmentation_module import SegmentationModule
from helpers import TINY_TRAIN, run_script

TINY = TINY_TRAIN
pytestmark = pytest.mark.slow


def run_train(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script(root, "train", *overrides)


def test_train_writes_checkpoint_and_tensorboard_logs(tmp_path):
    # trainer.gpus=0: Lightning 1's way of saying "the CPU" is taken as typed
    proc = run_train(tmp_path, *TINY, "trainer.gpus=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best val/dice:" in proc.stdout and "tensorboard --logdir" in proc.stdout
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    # the generated set landed in outputs/data, in Kaggle's layout
    (data,) = (tmp_path / "outputs" / "data").glob("synthetic-*")
    assert len(list((data / "train").glob("*.jpg"))) == 48
    # the config Hydra resolved is kept with the run
    assert (run / ".hydra" / "config.yaml").is_file()

    best = [p for p in (run / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    assert str(best[0]) in proc.stdout
    saved = torch.load(best[0], map_location="cpu", weights_only=True)
    assert saved["datamodule_hyper_parameters"]["size"] == [32, 48]
    model = SegmentationModule.load_from_checkpoint(best[0], map_location="cpu")
    assert model.hparams.net["base_width"] == 4 and model.hparams.net["depth"] == 3
    logits = model.eval()(torch.zeros(1, 3, 32, 48))
    assert logits.shape == (1, 1, 32, 48)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"val/dice", "val/loss", "train/loss_epoch"} <= set(tags)
    assert any(t.startswith("lr-") for t in tags)
    dice = [e.value for e in events.Scalars("val/dice")]
    assert len(dice) == 2 and all(0.0 <= d <= 1.0 for d in dice)
    printed = float(proc.stdout.split("best val/dice:")[1].split()[0])
    assert printed == pytest.approx(max(dice), abs=1e-4)


def test_missing_carvana_folder_explains_the_layout(tmp_path):
    proc = run_train(tmp_path, "data=carvana", f"data.root={tmp_path / 'kaggle'}", "debug=fast")
    assert proc.returncode == 2
    assert "Carvana data folder not found" in proc.stderr
    assert "train_masks" in proc.stderr and "kaggle competitions download" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_multirun_runs_each_job_in_its_own_folder(tmp_path):
    proc = run_train(tmp_path, "-m", *TINY, "trainer.max_epochs=1", "model.net.base_width=2,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    widths = []
    for job in jobs:
        (ckpt,) = (job / "checkpoints").glob("epoch_*.ckpt")
        widths.append(torch.load(ckpt, weights_only=True)["hyper_parameters"]["net"]["base_width"])
    assert widths == [2, 4]


def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning's DDP (gloo) with 2 processes: both train, validation metrics agree across
    ranks, and one run folder with one set of checkpoints is written."""
    env_extra = {"PYTHONPATH": str(Path(__file__).parent)}
    proc = run_script(
        tmp_path,
        "train",
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "model.optimizer.lr=3e-3",
        f"+callbacks.ranks={{_target_: helpers.rank_metrics_callback, folder: {tmp_path}}}",
        env=env_extra,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in output and "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert proc.stdout.count("best val/dice:") == 1  # rank 0 reports, rank 1 stays quiet
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # each rank validated half of the 16 validation images, and the metrics were reduced over
    # both (the training loss, logged without a reduction, differs: each rank saw other images)
    assert [r["val_images_seen"] for r in ranks] == [8, 8]
    for key in ("val/dice", "val/loss"):
        assert ranks[0]["metrics"][key] == pytest.approx(ranks[1]["metrics"][key], abs=1e-6)
    assert 0.0 <= ranks[0]["metrics"]["val/dice"] <= 1.0
    assert ranks[0]["metrics"]["train/loss_epoch"] != ranks[1]["metrics"]["train/loss_epoch"]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert len(list((run / "checkpoints").glob("epoch_*.ckpt"))) == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
