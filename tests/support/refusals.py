"""A user's mistake on the command line, one row each (``Row``): one clear message, exit status 2,
no traceback, and nothing written or overwritten (no run folder left behind either).

Each entry point's test file holds its rows; they run the entry point in this process
(``run_entry``: the same argv, folder and environment as a user's shell, without a new
interpreter per row), and a few as real subprocesses, to show the two agree. What the rows are
given (a checkpoint, photos, data folders) is made here.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from carseg.data.split import SplitRecord
from support.configs import build_model
from support.entry import run_entry, run_script
from support.files import snapshot


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
    split = {"root": "/data", "val_fraction": 0.5, "split_seed": 1, "car_id_pattern": None}
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


def assert_refused(row: Row, tmp: Path) -> None:
    """Run ``row`` in this process: exit status 2, every expected piece of message, no
    traceback, nothing outside outputs/ written or changed, and no run folder left behind."""
    args = row.args(tmp)
    before = {k: v for k, v in snapshot(tmp).items() if not k.startswith("outputs")}
    proc = run_entry(tmp, row.script, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    for text in row.sees:
        assert text in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    after = {k: v for k, v in snapshot(tmp).items() if not k.startswith("outputs")}
    assert after == before  # nothing outside outputs/ written or changed
    outputs = tmp / "outputs"
    assert not (outputs / "data").exists()  # no data generated
    assert not list(outputs.rglob("*.ckpt"))  # nothing trained
    assert not list(outputs.glob("*/runs/*"))  # and no run folder left behind


def assert_refused_by_a_subprocess(row: Row, tmp: Path) -> None:
    """``row`` as a real subprocess, as a user would run it: the same message and status."""
    proc = run_script(tmp, row.script, *row.args(tmp))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(text in proc.stderr for text in row.sees), proc.stderr[-3000:]
