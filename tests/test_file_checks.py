"""carseg.data.file_checks: every problem of a data folder found before training starts, from file
headers, each named with its file; ``on_bad_file=skip`` trains without them."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carseg.data.file_checks import check_dataset, describe
from carseg.data.rle import rle_encode
from carseg.utils.errors import CarsegError
from support.configs import build_datamodule
from support.files import snapshot


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


def csv_not_utf8(root: Path) -> Path:
    shutil.rmtree(root / "train_masks")
    (root / "train_masks.csv").write_bytes(b"img,rle_mask\n\xff\xfe\x00garbage,1 2\n")
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
    Row("CSV that is not UTF-8 text", csv_not_utf8, ["train_masks.csv", "not a UTF-8 text file"]),
    Row(
        "data.val_fraction=0",
        lambda root: root,
        ["data.val_fraction=0", "between 0 and 1", "validation"],
        {"val_fraction": 0},
    ),
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
    with pytest.raises(CarsegError) as err:
        dm = build_datamodule(root, size=(32, 48), num_workers=0, **(row.options or {}))
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


def _pair(folder, name, size=(20, 30), mask_size=None):
    image = folder / f"{name}.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(noise).save(image)
    mask = folder / f"{name}_mask.gif"
    Image.new("P", (mask_size or size)[::-1]).save(mask)
    return image, mask


def test_clean_files_have_no_problem_and_each_kind_is_named(tmp_path):
    images, masks, rles, lines = {}, {}, {}, {}
    for name in ("ok", "short", "small_mask", "bad_mask"):
        images[name], masks[name] = _pair(tmp_path, name)
    assert check_dataset(images, masks, {}) == []

    images["short"].write_bytes(images["short"].read_bytes()[:-40])  # no JPEG end marker
    _pair(tmp_path, "small_mask", mask_size=(10, 30))
    masks["bad_mask"].write_bytes(b"GIF89a but nothing else")
    images["rle"], _ = _pair(tmp_path, "rle")
    rles["rle"], lines["rle"] = "590 20", 7  # past the 600 pixels of a 20x30 mask
    images["rle_ok"], _ = _pair(tmp_path, "rle_ok")
    rles["rle_ok"] = rle_encode(np.eye(20, 30, dtype=np.uint8))

    problems = {p.image_id: p for p in check_dataset(images, masks, rles, lines)}
    assert set(problems) == {"short", "small_mask", "bad_mask", "rle"}
    assert "truncated JPEG" in problems["short"].what and problems["short"].path == images["short"]
    assert "30x10 but its image is 30x20" in problems["small_mask"].what
    assert (
        problems["bad_mask"].what.startswith("mask ")
        and problems["bad_mask"].path == masks["bad_mask"]
    )
    assert "line 7" in problems["rle"].what and "20x30" in problems["rle"].what

    message = describe(list(problems.values()), total=len(images), shown=2)
    assert message.startswith(f"4 of {len(images)} images have a problem:")
    assert "... and 2 more" in message
