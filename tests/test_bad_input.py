"""Bad input, one row each: what the user does, what they see, and that nothing was written.

Data rows run the data module as training does before its first step (``prepare_data`` then
``setup``); command rows run the entry points as a user would. Every row also checks that the
folders it touched are byte-for-byte as they were.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from carseg.dataset import CarvanaDataset
from carseg.errors import CarsegError
from helpers import TINY_TRAIN, build_datamodule, build_model, run_script


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def carvana(tiny_set, tmp_path) -> Path:
    """A private copy of the tiny generated set (5 cars x 16 views, 80x120) to break."""
    root = tmp_path / "carvana"
    shutil.copytree(tiny_set, root)
    return root


def first(root: Path, n: int = 1) -> list[str]:
    return sorted(p.stem for p in (root / "train").glob("*.jpg"))[:n]


def mask_path(root: Path, image_id: str) -> Path:
    return root / "train_masks" / f"{image_id}_mask.gif"


# --- how each row breaks the folder -------------------------------------------------------------
def no_root(root: Path) -> Path:
    return root.parent / "nowhere"


def empty_train(root: Path) -> Path:
    for p in (root / "train").iterdir():
        p.unlink()
    return root


def masks_missing(root: Path) -> Path:
    (root / "train_masks.csv").unlink()  # else the CSV's rows stand in for the missing files
    for image_id in first(root, 3):
        mask_path(root, image_id).unlink()
    return root


def mask_of_other_size(root: Path) -> Path:
    (image_id,) = first(root)
    Image.new("P", (60, 40)).save(mask_path(root, image_id))
    return root


def truncated_jpeg(root: Path) -> Path:
    (image_id,) = first(root)
    path = root / "train" / f"{image_id}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root


def garbage_jpeg(root: Path) -> Path:
    (image_id,) = first(root)
    (root / "train" / f"{image_id}.jpg").write_bytes(b"\x00garbage" * 50)
    return root


def truncated_gif(root: Path) -> Path:
    (image_id,) = first(root)
    path = mask_path(root, image_id)
    path.write_bytes(path.read_bytes()[:-20])
    return root


def bomb(root: Path) -> Path:
    (image_id,) = first(root)
    # 4000 x 4000 pixels: past the limit lowered to 1,000,000 in this row (Pillow's is ~89 M)
    Image.new("RGB", (4000, 4000)).save(root / "train" / f"{image_id}.jpg", quality=10)
    return root


def csv_bad_structure(root: Path) -> Path:
    shutil.rmtree(root / "train_masks")
    lines = (root / "train_masks.csv").read_text().splitlines()
    lines[5] = lines[5] + ",extra"
    (root / "train_masks.csv").write_text("\n".join(lines) + "\n")
    return root


def csv_bad_rle(root: Path) -> Path:
    shutil.rmtree(root / "train_masks")
    lines = (root / "train_masks.csv").read_text().splitlines()
    name = lines[7].split(",")[0]
    lines[7] = f"{name},5 3 1 2"  # runs out of order
    (root / "train_masks.csv").write_text("\n".join(lines) + "\n")
    return root


def three_problems(root: Path) -> Path:
    ids = first(root, 3)
    Image.new("P", (10, 10)).save(mask_path(root, ids[0]))
    (root / "train" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg")
    path = root / "train" / f"{ids[2]}.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return root


@dataclass(frozen=True)
class Row:
    name: str
    breaks: Callable[[Path], Path]
    sees: list[str]  # every one of these is in the message
    options: dict | None = None


ERROR_ROWS = [
    Row(
        "data root missing",
        no_root,
        ["Carvana data folder not found", "nowhere", "train_masks", "kaggle competitions download"],
    ),
    Row("train/ empty", empty_train, ["No images (.jpg", "train"]),
    Row("images without masks", masks_missing, ["3 of 80 images", "have no mask", "on_bad_file"]),
    Row("mask of another size", mask_of_other_size, ["mask is 60x40 but its image is 120x80"]),
    Row("truncated JPEG", truncated_jpeg, ["image truncated JPEG", "1 of 80 images"]),
    Row("garbage JPEG", garbage_jpeg, ["image not a readable image"]),
    Row("truncated GIF mask", truncated_gif, ["mask truncated GIF"]),
    Row("decompression bomb", bomb, ["decompression-bomb limit", "MAX_IMAGE_PIXELS"]),
    Row("CSV row with 3 fields", csv_bad_structure, ["train_masks.csv, line 6", "2 fields"]),
    Row("CSV row with a bad RLE", csv_bad_rle, ["train_masks.csv row, line 8", "out of order"]),
    Row(
        "three problems at once",
        three_problems,
        ["3 of 80 images have a problem", "mask is 10x10", "not a readable image", "truncated"],
    ),
]


@pytest.mark.parametrize("row", ERROR_ROWS, ids=lambda r: r.name)
def test_data_problem_stops_before_training_with_a_clear_message(row, carvana, monkeypatch):
    root = row.breaks(carvana)
    if row.breaks is bomb:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    before = snapshot(carvana.parent)
    dm = build_datamodule(root, size=(32, 48), num_workers=0, **(row.options or {}))
    with pytest.raises(CarsegError) as err:
        dm.prepare_data()
        dm.setup("fit")
    for text in row.sees:
        assert text in str(err.value), str(err.value)
    assert snapshot(carvana.parent) == before  # nothing written, nothing overwritten


def test_skip_mode_trains_without_the_bad_files_and_names_them(carvana, caplog):
    three_problems(carvana)
    (carvana / "train_masks.csv").unlink()
    for image_id in first(carvana, 6)[3:]:  # 3 more (other) images without a mask
        mask_path(carvana, image_id).unlink()
    before = snapshot(carvana)
    dm = build_datamodule(carvana, size=(32, 48), num_workers=0, on_bad_file="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 80 - 6
    assert "3 of 80 images in" in caplog.text and "have no mask" in caplog.text
    assert "3 of 77 images have a problem" in caplog.text
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 32, 48)
    assert snapshot(carvana) == before


def _save_as(path: Path, array: np.ndarray, mode: str) -> None:
    Image.fromarray(array).convert(mode).save(path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_grey_rgba_cmyk_and_palette_images_are_converted_to_rgb(carvana, mode):
    (image_id,) = first(carvana)
    original = CarvanaDataset(carvana).load_image(image_id)
    suffix = ".jpg" if mode in ("L", "CMYK") else ".png"
    (carvana / "train" / f"{image_id}.jpg").unlink()
    _save_as(carvana / "train" / f"{image_id}{suffix}", original, mode)
    ds = CarvanaDataset(carvana)
    assert not ds.problems()
    image = ds.load_image(image_id)
    assert image.shape == original.shape and image.dtype == np.uint8
    if mode == "L":
        assert np.array_equal(image[..., 0], image[..., 2])  # grey in all three channels


@pytest.mark.parametrize("values", [(0, 255), (0, 1)], ids=["0-255", "0-1"])
@pytest.mark.parametrize("fmt", ["png-grey", "gif-palette", "png-rgb"])
def test_mask_values_are_normalised_to_0_1(carvana, values, fmt):
    (image_id,) = first(carvana)
    ds = CarvanaDataset(carvana)
    truth = ds.load_mask(image_id)
    stored = np.where(truth > 0, values[1], values[0]).astype(np.uint8)
    mask_path(carvana, image_id).unlink()
    if fmt == "png-grey":
        Image.fromarray(stored, "L").save(carvana / "train_masks" / f"{image_id}_mask.png")
    elif fmt == "png-rgb":
        Image.fromarray(np.stack([stored] * 3, -1)).save(
            carvana / "train_masks" / f"{image_id}_mask.png"
        )
    else:
        gif = Image.fromarray(stored, "P")
        gif.putpalette([0, 0, 0] + [255, 255, 255] * 255)
        gif.save(mask_path(carvana, image_id))
    loaded = CarvanaDataset(carvana).load_mask(image_id)
    assert loaded.dtype == np.uint8 and set(np.unique(loaded)) == {0, 1}
    assert np.array_equal(loaded, truth)


def test_non_image_files_are_ignored(carvana):
    for folder in ("train", "train_masks"):
        (carvana / folder / ".DS_Store").write_bytes(b"\x00\x01")
        (carvana / folder / "Thumbs.db").write_bytes(b"\x00")
        (carvana / folder / "notes.txt").write_text("hello")
        (carvana / folder / "subfolder").mkdir()
    ds = CarvanaDataset(carvana)
    assert len(ds) == 80 and not ds.problems()


def test_a_file_that_breaks_mid_epoch_is_named(carvana):
    """What the header check cannot see (a corrupt middle) fails on decode, naming the file."""
    ds = CarvanaDataset(carvana)
    path = carvana / "train" / f"{ds.ids[0]}.jpg"
    data = bytearray(path.read_bytes())
    data[2:-2] = b"\x00" * (len(data) - 4)  # keeps the start and end markers, wipes the rest
    path.write_bytes(bytes(data))
    with pytest.raises(CarsegError, match=rf"{ds.ids[0]}\.jpg"):
        ds[0]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=0, max_size=2000))
def test_random_bytes_as_an_image_give_a_readable_error_or_an_image(tiny_set, tmp_path, data):
    root = tmp_path / "fuzz"
    shutil.rmtree(root, ignore_errors=True)
    (root / "train").mkdir(parents=True)
    (root / "train_masks").mkdir()
    shutil.copy(mask_path(tiny_set, first(tiny_set)[0]), root / "train_masks" / "x_01_mask.gif")
    (root / "train" / "x_01.jpg").write_bytes(data)
    ds = CarvanaDataset(root)
    problems = ds.problems()
    if problems:
        assert "x_01.jpg" in str(problems[0].path) and problems[0].what
    try:
        image, _ = ds[0]
    except CarsegError as err:
        assert "x_01.jpg" in str(err)
    else:
        assert image.ndim == 3 and image.shape[2] == 3


# --- command rows ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandRow:
    name: str
    script: str
    args: Callable[[Path], list[str]]
    returncode: int
    sees: list[str]


def _text_file(tmp: Path) -> Path:
    (tmp / "notes.ckpt").write_text("not a checkpoint")
    return tmp / "notes.ckpt"


def _incompatible_checkpoint(tmp: Path) -> Path:
    state = {
        "state_dict": {"net.weird.weight": torch.zeros(1)},
        "hyper_parameters": {"base_width": 4, "depth": 2, "colour_space": "lab"},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (tmp / "other.ckpt").write_bytes(buffer.getvalue())
    return tmp / "other.ckpt"


def _valid_checkpoint(tmp: Path) -> Path:
    module = build_model(base_width=2, depth=1)
    state = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "datamodule_hyper_parameters": {"size": [32, 48]},
    }
    torch.save(state, tmp / "good.ckpt")
    return tmp / "good.ckpt"


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir(exist_ok=True)
    return tmp / "empty"


COMMAND_ROWS = [
    CommandRow("eval without a checkpoint", "eval", lambda t: [], 2, ["ckpt_path is required"]),
    CommandRow(
        "predict without input", "predict", lambda t: ["ckpt_path=x.ckpt"], 2, ["input is required"]
    ),
    # Hydra's own messages: asserted by what they name, not by Hydra's wording
    CommandRow("unknown key", "train", lambda t: ["foo=1"], 2, ["foo"]),
    CommandRow(
        "unknown group choice", "train", lambda t: ["model=unet_huge"], 2, ["unet_huge", "unet"]
    ),
    CommandRow(
        "more GPUs than present (trainer.gpus=1 on a machine without one)",
        "train",
        lambda t: [*TINY_TRAIN, "model=unet", "trainer.gpus=1"],
        2,
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"],
    ),
    CommandRow(
        "checkpoint that is not one",
        "eval",
        lambda t: [f"ckpt_path={_text_file(t)}"],
        2,
        ["is not a PyTorch checkpoint"],
    ),
    CommandRow(
        "checkpoint of another model config",
        "eval",
        lambda t: [f"ckpt_path={_incompatible_checkpoint(t)}"],
        2,
        ["does not fit this version's SegmentationModule", "colour_space"],
    ),
    CommandRow(
        "predict on an empty folder",
        "predict",
        lambda t: [f"ckpt_path={_text_file(t)}", f"input={_empty_dir(t)}"],
        2,
        ["No images", "nothing to predict"],
    ),
    CommandRow(
        "eval on an empty data folder",
        "eval",
        lambda t: [
            f"ckpt_path={_valid_checkpoint(t)}",
            "data=carvana",
            f"data.root={_empty_dir(t)}",
        ],
        2,
        ["No image folder", "empty", "train_masks"],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("row", COMMAND_ROWS, ids=lambda r: r.name)
def test_command_fails_with_its_own_message_and_no_traceback(row, tmp_path):
    args = row.args(tmp_path)
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("outputs")}
    proc = run_script(tmp_path, row.script, *args)
    assert proc.returncode == row.returncode, proc.stderr[-2000:]
    for text in row.sees:
        assert text in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("outputs")}
    assert after == before
    assert not (tmp_path / "outputs" / "data").exists()  # no data generated
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))  # nothing trained
