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
from carseg.training.callbacks.record import CheckpointRecorder
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
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[CheckpointRecorder(refine=None)])  # fmt: skip
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    raw["epoch"] = epoch  # saved at the end of this epoch: epoch + 1 finished
    raw["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] = epoch + 1
    raw["carseg"]["size"] = [32, 48]
    split = {"root": "/data", "val_fraction": 0.5, "split_seed": 1, "car_id_pattern": None,
             "fold": None}  # fmt: skip
    split |= {"train_cars": ["car1"], "val_cars": ["car2"], **record}
    raw["carseg"]["split"] = SplitRecord(**split).to_dict()
    torch.save(raw, path)
    return path


def crafted_checkpoint(tmp: Path, node: str = "loss", target: str = "os.system") -> Path:
    """``checkpoint`` with one node of its record naming ``target``, which would touch PWNED in
    the command's folder if it were ever called."""
    path = tmp / "crafted.ckpt"
    raw = torch.load(checkpoint(tmp), weights_only=True)
    raw["carseg"]["model"][node] = {"_target_": target, "command": "touch PWNED"}
    torch.save(raw, path)
    return path


def nan_checkpoint(tmp: Path, value: float = float("nan")) -> Path:
    """``checkpoint`` with one weight NaN (or ``value``): what a diverged run could leave."""
    path = tmp / "nan.ckpt"
    raw = torch.load(checkpoint(tmp), weights_only=True)
    key = next(k for k in raw["state_dict"] if k.endswith("weight"))
    raw["state_dict"][key].view(-1)[0] = value
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
    from carseg.data.synthetic import ensure_dataset

    return ensure_dataset(tmp / "data", n_cars=2, height=32, width=48, seed=0)


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


def onnx_file(tmp: Path, kind: str) -> Path:
    """An ``.onnx`` that is not one: ``truncated`` (half of a real export's bytes), ``random``
    bytes, or ``text``."""
    path = tmp / f"{kind}.onnx"
    if kind == "truncated":
        from carseg.inference.export import export_onnx
        from carseg.training.checkpoint_reader import CheckpointRecord

        model = build_model(base_width=2, depth=1).eval()
        full = export_onnx(model, CheckpointRecord(dict(model.hparams), (32, 48), 0.5, None, None),
                           tmp / "full.onnx")  # fmt: skip
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        full.unlink()
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        path.write_text("not a model\n")
    return path


def earlier_prediction(tmp: Path) -> Path:
    """The folder of an earlier prediction, with its masks (outside outputs/)."""
    folder = tmp / "pred"
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for name in ("a", "b"):
        Image.fromarray(np.zeros((40, 60), np.uint8)).save(folder / "masks" / f"{name}_mask.png")
    (folder / "submission.csv").write_text("img,rle_mask\na.png,\nb.png,\n")
    return folder


def background_in_outputs(tmp: Path) -> Path:
    """An image in an earlier prediction's ``composites/``: a background an overwrite would
    delete before reading it."""
    path = earlier_prediction(tmp) / "composites" / "x.jpg"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(path)
    return path


def data_with(tmp: Path, flaw: str) -> Path:
    """A data folder of 2 generated cars with one ``flaw``: ``mask_size`` (a mask of another
    size than its image), ``photo_mask`` (a colour photo as a mask), ``loop`` (a symbolic link
    in train/ that points at itself)."""
    root = data_folder(tmp)
    first = sorted((root / "train").iterdir())[0]
    mask = root / "train_masks" / f"{first.stem}_mask.gif"
    if flaw == "mask_size":
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(mask)
    elif flaw == "photo_mask":
        Image.open(first).convert("RGB").save(mask.with_suffix(".png"))
        mask.unlink()
    elif flaw == "loop":  # the image's name, its mask beside it, the link pointing at itself
        first.unlink()
        first.symlink_to(first)
    return root


def plain_state_dict(tmp: Path) -> Path:
    """A file of weights alone (``torch.save(model.state_dict())``), not a training checkpoint."""
    torch.save(build_model(base_width=2, depth=1).state_dict(), tmp / "weights.pt")
    return tmp / "weights.pt"


def a_file(tmp: Path) -> Path:
    (tmp / "data.txt").write_text("not a folder\n")
    return tmp / "data.txt"


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
    assert not list((outputs / "data").glob("synthetic-*"))  # no data generated
    assert not list(outputs.rglob("*.ckpt"))  # nothing trained
    assert not list(outputs.glob("*/runs/*"))  # and no run folder left behind


def assert_refused_by_a_subprocess(row: Row, tmp: Path) -> None:
    """``row`` as a real subprocess, as a user would run it: the same message and status."""
    proc = run_script(tmp, row.script, *row.args(tmp))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(text in proc.stderr for text in row.sees), proc.stderr[-3000:]
