"""carseg.data.dataset: Kaggle's layout on disk, read as images and masks (files, the RLE CSV,
real Carvana pairs), with the file named whenever one cannot be read."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carseg.data.dataset import CarvanaDataset
from carseg.data.split import car_id
from carseg.utils.errors import CarsegError, DataNotFoundError
from support.configs import build_datamodule


@pytest.fixture
def carvana(tiny_set, tmp_path) -> Path:
    """A private copy of the tiny generated set (5 cars x 16 views, 80x120) to break."""
    root = tmp_path / "carvana"
    shutil.copytree(tiny_set, root)
    return root


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


def test_dataset_lists_kaggle_layout(tiny_set):
    ds = CarvanaDataset(tiny_set, image_dir="train")
    assert len(ds) == 5 * 16
    image, mask = ds[0]
    assert image.dtype == np.uint8 and image.shape == (80, 120, 3)
    assert mask.dtype == np.uint8 and mask.shape == (80, 120)
    assert set(np.unique(mask)) == {0, 1}


def test_masks_from_rle_csv_equal_the_gifs(tiny_set, tmp_path):
    """Without train_masks/, masks come from train_masks.csv: the same pixels."""
    root = tmp_path / "csv_only"
    shutil.copytree(tiny_set / "train", root / "train")
    shutil.copy(tiny_set / "train_masks.csv", root / "train_masks.csv")
    from_gif, from_csv = (
        CarvanaDataset(tiny_set, image_dir="train"),
        CarvanaDataset(root, image_dir="train"),
    )
    assert from_csv.ids == from_gif.ids
    for i in range(0, len(from_gif), 7):
        assert np.array_equal(from_csv[i][1], from_gif[i][1])


def test_train_hq_folder_is_read(tiny_set, tmp_path):
    root = tmp_path / "hq"
    shutil.copytree(tiny_set / "train", root / "train_hq")
    shutil.copytree(tiny_set / "train_masks", root / "train_masks")
    hq = CarvanaDataset(root, image_dir="train_hq")
    plain = CarvanaDataset(tiny_set, image_dir="train")
    assert hq.ids == plain.ids and {p.parent.name for p in hq.image_paths.values()} == {"train_hq"}
    image, mask = hq[5]
    assert np.array_equal(image, plain[5][0]) and np.array_equal(mask, plain[5][1])
    with pytest.raises(DataNotFoundError, match="No image folder"):
        CarvanaDataset(tiny_set, image_dir="train_hq")


def test_missing_root_says_what_layout_is_expected(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        CarvanaDataset(tmp_path / "nowhere", image_dir="train")
    message = str(err.value)
    assert "nowhere" in message and "train_masks" in message and "kaggle" in message.lower()


def test_missing_masks_are_listed_with_their_count(tiny_set, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tiny_set, root)
    (root / "train_masks.csv").unlink()  # else its rows stand in for the missing files
    gone = sorted((root / "train_masks").glob("*.gif"))[:3]
    for path in gone:
        path.unlink()
    with pytest.raises(DataNotFoundError, match=r"3 of 80 images .* have no mask") as err:
        CarvanaDataset(root, image_dir="train")
    assert gone[0].name.removesuffix("_mask.gif") in str(err.value)


def test_jpeg_draft_decodes_at_reduced_scale_close_to_full_decode(tiny_set):
    import cv2

    full = CarvanaDataset(tiny_set, image_dir="train")
    reduced = CarvanaDataset(tiny_set, decode_size=(20, 30), image_dir="train")
    image_id = full.ids[5]
    small = reduced.load_image(image_id, at_least=(20, 30))
    assert small.shape == (20, 30, 3)  # 80x120 at 1/4: the smallest scale still >= 20x30
    assert reduced.load_image(image_id, at_least=(23, 30)).shape == (40, 60, 3)  # 1/2
    assert reduced.load_image(image_id, at_least=(21, 31)).shape == (20, 30, 3)  # 1 px slack
    reference = cv2.resize(full.load_image(image_id), (30, 20), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 6
    image, mask = reduced.read_pair(image_id)
    assert mask.shape == image.shape[:2] == (20, 30) and set(np.unique(mask)) == {0, 1}


def test_loader_reads_real_carvana_pairs(sample_dir):
    ds = CarvanaDataset(sample_dir, image_dir="train")
    assert len(ds) == 32
    assert {car_id(i) for i in ds.ids} == {"00087a6bd4dc", "02159e548029"}
    for index in (0, 17, 31):
        image, mask = ds[index]
        assert image.shape == (1280, 1918, 3) and image.dtype == np.uint8
        assert mask.shape == (1280, 1918)
        assert set(np.unique(mask)) == {0, 1}
        assert 0.05 < mask.mean() < 0.5  # a car, not the background
