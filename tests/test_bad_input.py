"""Bad input, one row each: what the user does, what they see, and that nothing was written.

Data rows run the data module as training does before its first step (``prepare_data`` then
``setup``); command rows run the entry points as a user would. Every row also checks that the
folders it touched are byte-for-byte as they were.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from carseg.data.dataset import CarvanaDataset
from carseg.utils.errors import CarsegError
from helpers import build_datamodule, snapshot


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


# --- folders that are odd but right: they must load, with the true masks -------------------------
def csv_with_byte_order_mark(root: Path) -> Path:
    shutil.rmtree(root / "train_masks")
    csv_path = root / "train_masks.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # what spreadsheets write
    return root


def empty_mask_folder_beside_the_csv(root: Path) -> Path:
    for path in (root / "train_masks").iterdir():
        path.unlink()
    return root


def jpeg_masks(root: Path) -> Path:
    (root / "train_masks.csv").unlink()
    for path in sorted((root / "train_masks").glob("*.gif")):
        values = np.asarray(Image.open(path)) * 255
        Image.fromarray(values.astype(np.uint8), "L").save(path.with_suffix(".jpg"), quality=75)
        path.unlink()
    return root


@pytest.mark.parametrize(
    ("breaks", "exact"),
    [
        (csv_with_byte_order_mark, True),
        (empty_mask_folder_beside_the_csv, True),
        (jpeg_masks, False),
    ],
    ids=lambda x: x.__name__ if callable(x) else None,
)
def test_odd_but_valid_mask_layouts_load_the_true_masks(carvana, tiny_set, breaks, exact, caplog):
    truth = CarvanaDataset(tiny_set, image_dir="train")
    with caplog.at_level(logging.WARNING):
        dm = build_datamodule(breaks(carvana), size=(32, 48), num_workers=0)
        dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 80
    ds = CarvanaDataset(carvana, image_dir="train")
    for image_id in ds.ids[::9]:
        got, want = ds.load_mask(image_id), truth.load_mask(image_id)
        assert (got != want).mean() == 0 if exact else (got != want).mean() < 0.02
    if breaks is jpeg_masks:
        assert "80 masks in" in caplog.text and "JPEG" in caplog.text


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
    original = CarvanaDataset(carvana, image_dir="train").load_image(image_id)
    suffix = ".jpg" if mode in ("L", "CMYK") else ".png"
    (carvana / "train" / f"{image_id}.jpg").unlink()
    _save_as(carvana / "train" / f"{image_id}{suffix}", original, mode)
    ds = CarvanaDataset(carvana, image_dir="train")
    assert not ds.problems()
    image = ds.load_image(image_id)
    assert image.shape == original.shape and image.dtype == np.uint8
    if mode == "L":
        assert np.array_equal(image[..., 0], image[..., 2])  # grey in all three channels


@pytest.mark.parametrize("values", [(0, 255), (0, 1)], ids=["0-255", "0-1"])
@pytest.mark.parametrize("fmt", ["png-grey", "gif-palette", "png-rgb"])
def test_mask_values_are_normalised_to_0_1(carvana, values, fmt):
    (image_id,) = first(carvana)
    ds = CarvanaDataset(carvana, image_dir="train")
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
    loaded = CarvanaDataset(carvana, image_dir="train").load_mask(image_id)
    assert loaded.dtype == np.uint8 and set(np.unique(loaded)) == {0, 1}
    assert np.array_equal(loaded, truth)


def test_non_image_files_are_ignored(carvana):
    for folder in ("train", "train_masks"):
        (carvana / folder / ".DS_Store").write_bytes(b"\x00\x01")
        (carvana / folder / "Thumbs.db").write_bytes(b"\x00")
        (carvana / folder / "notes.txt").write_text("hello")
        (carvana / folder / "subfolder").mkdir()
    ds = CarvanaDataset(carvana, image_dir="train")
    assert len(ds) == 80 and not ds.problems()


def test_a_file_that_breaks_mid_epoch_is_named(carvana):
    """What the header check cannot see (a corrupt middle) fails on decode, naming the file."""
    ds = CarvanaDataset(carvana, image_dir="train")
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
    ds = CarvanaDataset(root, image_dir="train")
    problems = ds.problems()
    if problems:
        assert "x_01.jpg" in str(problems[0].path) and problems[0].what
    try:
        image, _ = ds[0]
    except CarsegError as err:
        assert "x_01.jpg" in str(err)
    else:
        assert image.ndim == 3 and image.shape[2] == 3
