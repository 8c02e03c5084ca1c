"""A user's mistake on the command line, one row each: one clear message, exit status 2, no
traceback, and nothing written or overwritten (no run folder left behind either).

The rows run the entry points in this process (``run_entry``: the same argv, folder and
environment as a user's shell, without a new interpreter per row); a few at the end run them as
real subprocesses, as a user would, to show the two agree.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from carseg.data.split import SplitRecord
from helpers import TINY_TRAIN, build_model, run_entry, run_script, snapshot


# --- what the rows are given ---------------------------------------------------------------------
def checkpoint(tmp: Path, epoch: int = 0, base_width: int = 2, **record) -> Path:
    """A real training checkpoint of a tiny model (trained at 32x48), with its split record."""
    path = tmp / "runs" / "old" / "checkpoints" / "last.ckpt"
    if path.exists():
        return path
    module = build_model(base_width=base_width, depth=1)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    raw["epoch"] = epoch  # saved at the end of this epoch: epoch + 1 finished
    raw["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] = epoch + 1
    raw["carseg"]["size"] = [32, 48]
    split = {"root": "/data", "val_fraction": 0.5, "split_seed": 1}
    split |= {"train_cars": ["car1"], "val_cars": ["car2"], **record}
    raw["carseg"]["split"] = SplitRecord(**split).to_dict()
    torch.save(raw, path)
    return path


def photos(tmp: Path, names: tuple[str, ...] = ("a.jpg", "b.jpg")) -> Path:
    folder = tmp / "photos"
    folder.mkdir(exist_ok=True)
    for name in names:
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(folder / name)
    return folder


def not_a_checkpoint(tmp: Path) -> Path:
    (tmp / "notes.ckpt").write_text("not a checkpoint")
    return tmp / "notes.ckpt"


def foreign_checkpoint(tmp: Path) -> Path:
    state = {
        "state_dict": {"net.weird.weight": torch.zeros(1)},
        "hyper_parameters": {"base_width": 4, "depth": 2, "colour_space": "lab"},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (tmp / "other.ckpt").write_bytes(buffer.getvalue())
    return tmp / "other.ckpt"


def data_folder(tmp: Path) -> Path:
    """A small data set in Kaggle's layout (2 cars), other cars than the checkpoint's."""
    from carseg.data.synthetic import generate_dataset

    return generate_dataset(tmp / "data", n_cars=2, height=32, width=48, seed=0)


def empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir(exist_ok=True)
    return tmp / "empty"


def earlier_run(tmp: Path) -> Path:
    """The folder of a finished run, outside outputs/ so the snapshot watches it."""
    folder = tmp / "old_run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("model: {}\n")
    (folder / "summary.json").write_text('{"status": "completed"}\n')
    return folder


@dataclass(frozen=True)
class Row:
    name: str
    script: str
    args: Callable[[Path], list[str]]
    sees: list[str]  # every one of these is in the message


TRAIN = [*TINY_TRAIN]
ROWS = [
    # missing or unknown options
    Row("eval without a checkpoint", "eval", lambda t: [], ["ckpt_path=<checkpoint>"]),
    Row("predict without input", "predict", lambda t: ["ckpt_path=x.ckpt"], ["input is required"]),
    Row("unknown key", "train", lambda t: ["foo=1"], ["foo"]),
    Row("unknown group choice", "train", lambda t: ["model=unet_huge"], ["unet_huge", "unet"]),
    Row("export in an unknown format", "export", lambda t: ["ckpt_path=x", "format=tflite"],
        ["format='tflite'", "onnx"]),
    # options that reach torch, Lightning or numpy
    Row("trainer.gpus=1 without a GPU", "train", lambda t: [*TRAIN, "trainer.gpus=1"],
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"]),
    Row("data.batch_size=0", "train", lambda t: [*TRAIN, "data.batch_size=0"],
        ["data.batch_size must be an integer >= 1", "0"]),
    Row("model.optimizer.lr=-1", "train", lambda t: [*TRAIN, "model.optimizer.lr=-1"], ["model.optimizer.lr", "greater than 0"]),
    Row("data.num_workers=-1", "train", lambda t: [*TRAIN, "data.num_workers=-1"],
        ["data.num_workers", ">= 0", "auto"]),
    Row("data.val_fraction=0", "train", lambda t: [*TRAIN, "data.val_fraction=0"],
        ["data.val_fraction=0", "between 0 and 1"]),
    Row("data.size=[0,10]", "train", lambda t: [*TRAIN, "data.size=[0,10]"],
        ["data.size", "[height, width]"]),
    Row("data.split_seed=-1", "train", lambda t: [*TRAIN, "data.split_seed=-1"],
        ["data.split_seed", ">= 0"]),
    Row("model.net.depth=0", "train", lambda t: [*TRAIN, "model.net.depth=0"], ["model.net.depth", ">= 1"]),
    Row("model/loss=focal", "train", lambda t: [*TRAIN, "model/loss=focal"],
        ["model/loss/focal", "bce_dice", "boundary_bce_dice"]),
    Row("a key that moved, in its old spelling", "train", lambda t: [*TRAIN, "model.lr=1e-3"],
        ["model.lr is now model.optimizer.lr", "model.optimizer.lr=1e-3"]),
    Row("a config group set as a value", "train", lambda t: [*TRAIN, "model.loss=bce_dice"],
        ["model.loss is now model/loss"]),
    Row("trainer.precision=fp8", "train", lambda t: [*TRAIN, "trainer.precision=fp8"],
        ["trainer", "fp8"]),
    Row("trainer.accumulate_grad_batches=0", "train",
        lambda t: [*TRAIN, "trainer.accumulate_grad_batches=0"], ["accumulate_grad_batches"]),
    Row("trainer.gpus=1 in predict, no CUDA", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "trainer.gpus=1"],
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"]),
    Row("predict resume=true and overwrite=true", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "resume=true",
                   "overwrite=true"], ["resume=true and overwrite=true"]),
    Row("device=cuda in eval, the old key", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "device=cuda"],
        ["device is now trainer.accelerator"]),
    Row("trainer.gpus=1 in eval, no CUDA", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "trainer.gpus=1"],
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"]),
    Row("predict threshold=1.5", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "threshold=1.5"],
        ["threshold=1.5", "between 0 and 1"]),
    Row("eval threshold=0", "eval", lambda t: [f"ckpt_path={checkpoint(t)}", "threshold=0"],
        ["threshold=0", "between 0 and 1"]),
    Row("predict batch_size=0", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "batch_size=0"],
        ["batch_size must be an integer >= 1"]),
    Row("eval split=test", "eval", lambda t: [f"ckpt_path={checkpoint(t)}", "split=test"],
        ["split='test'", "val, train, all"]),
    # checkpoints
    Row("checkpoint that is not one", "eval", lambda t: [f"ckpt_path={not_a_checkpoint(t)}"],
        ["notes.ckpt", "is not a PyTorch checkpoint"]),
    Row("checkpoint of another model config", "eval",
        lambda t: [f"ckpt_path={foreign_checkpoint(t)}"],
        ["other.ckpt", "does not fit this version's SegmentationModule"]),
    Row("resume with another model config", "train",
        lambda t: [*TRAIN, f"ckpt_path={checkpoint(t)}"],
        ["was trained with model.net.base_width=2", "model.net.base_width=4", "Resume with"]),
    Row("resume a run that has finished", "train",
        lambda t: [*TRAIN, "model.net.base_width=2", "model.net.depth=1", f"ckpt_path={checkpoint(t, 1)}"],
        ["already trained 2 epoch(s)", "trainer.max_epochs=2", "Raise trainer.max_epochs"]),
    Row("ckpt_path=last without a run", "train", lambda t: [*TRAIN, "ckpt_path=last"],
        ["ckpt_path=last", "nothing to resume"]),
    # folders
    Row("predict on an empty folder", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={empty_dir(t)}"],
        ["No images", "nothing to predict"]),
    Row("eval on an empty data folder", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana", f"data.root={empty_dir(t)}"],
        ["No image folder", "empty", "train_masks"]),
    Row("eval of a folder without the checkpoint's validation cars", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana", f"data.root={data_folder(t)}"],
        ["lacks 1 of the checkpoint's 1 val car(s)", "car2", "data.root"]),
    Row("a new run in an earlier run's folder", "train",
        lambda t: [*TRAIN, f"hydra.run.dir={earlier_run(t)}"],
        ["old_run already holds a run", "summary.json", "ckpt_path=last"]),
    Row("predict inputs that share a name", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t, ('car.jpg', 'car.png'))}"],
        ["car.jpg, car.png -> masks/car_mask.png", "Rename"]),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_a_mistake_gets_one_message_and_exit_2(row, tmp_path):
    args = row.args(tmp_path)
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("outputs")}
    proc = run_entry(tmp_path, row.script, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    for text in row.sees:
        assert text in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("outputs")}
    assert after == before  # nothing outside outputs/ written or changed
    outputs = tmp_path / "outputs"
    assert not (outputs / "data").exists()  # no data generated
    assert not list(outputs.rglob("*.ckpt"))  # nothing trained
    assert not list(outputs.glob("*/runs/*"))  # and no run folder left behind


def test_prediction_skips_unreadable_inputs_lists_them_and_exits_2(tmp_path, monkeypatch):
    folder = photos(tmp_path, ("a.jpg", "b.png", "c.jpg"))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo")
    Image.new("RGB", (300, 200)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 200 // 3)  # huge.png: past the limit
    out = tmp_path / "pred"
    proc = run_entry(tmp_path, "predict", f"ckpt_path={checkpoint(tmp_path)}", f"input={folder}",
                     f"output_dir={out}")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "3 of 6 inputs could not be read" in proc.stderr
    for name, why in [("empty.jpg", "empty"), ("notes.jpg", "not a readable image"),
                      ("huge.png", "decompression-bomb")]:  # fmt: skip
        assert name in proc.stderr and why in proc.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "a_mask.png", "b_mask.png", "c_mask.png"]  # fmt: skip
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "img,rle_mask" and [r.split(",")[0] for r in rows[1:]] == [
        "a.jpg", "b.png", "c.jpg"]  # fmt: skip
    failed = (out / "failed.csv").read_text().splitlines()
    assert failed[0] == "img,reason" and len(failed) == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r.name in ("unknown key", "data.batch_size=0", "eval split=test")],
    ids=lambda r: r.name,
)
def test_a_real_subprocess_agrees(row, tmp_path):
    proc = run_script(tmp_path, row.script, *row.args(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(text in proc.stderr for text in row.sees), proc.stderr[-3000:]


def test_a_default_run_folder_that_is_taken_gives_way_to_the_next_name(tmp_path):
    from carseg.runs.run_folder import claim, made_by_this_run

    folder = tmp_path / "2026-01-01_00-00-00"
    assert claim(folder) == folder and made_by_this_run(folder)
    assert claim(folder) == tmp_path / "2026-01-01_00-00-00-2"
    assert claim(folder) == tmp_path / "2026-01-01_00-00-00-3"
