"""Reading images and masks, one row per way a file can store them: the pixels carseg reads are the
ones the file shows, never a palette index taken for a colour or a 16-bit value clipped to white."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from carseg.data.dataset import CarvanaDataset
from carseg.data.image_io import read_header, read_image, read_mask, save_mask
from carseg.utils.errors import CarsegError, UnreadableFileError

H, W = 24, 36


def truth() -> np.ndarray:
    """A {0, 1} mask: a car-like blob, background around it."""
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (18, 12), (12, 7), 0, 0, 360, 1, -1)
    return mask


# --- masks ---------------------------------------------------------------------------------------
def kaggle_gif(m, p):  # palette GIF, index 0 black, index 1 white
    save_mask(m, p.with_suffix(".gif"))
    return p.with_suffix(".gif")


def white_at_index_0(m, p):  # what Pillow's own adaptive palette makes of a black-and-white mask
    image = Image.fromarray(m * 255, "L").convert("RGB").convert("P", palette=Image.ADAPTIVE)
    assert image.getpalette()[:3] == [255, 255, 255]  # (the case under test)
    image.save(p.with_suffix(".gif"))
    return p.with_suffix(".gif")


def inverted_palette_png(m, p):
    image = Image.fromarray(1 - m, "P")
    image.putpalette([255, 255, 255, 0, 0, 0])
    image.save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def palette_without_colours(m, p):  # numpy indices saved as P with Pillow's default palette
    Image.fromarray(m, "P").save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def red_car_at_index_3(m, p):
    image = Image.fromarray(m * 3, "P")
    image.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 255, 0, 0])
    image.save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def grey(values: tuple[int, int]) -> Callable[[np.ndarray, Path], Path]:
    def save(m, p):
        Image.fromarray(np.where(m > 0, values[1], values[0]).astype(np.uint8), "L").save(
            p.with_suffix(".png")
        )
        return p.with_suffix(".png")

    save.__name__ = f"grey_{values[0]}_{values[1]}"
    return save


def one_bit(m, p):
    Image.fromarray(m * 255, "L").convert("1").save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def sixteen_bit(m, p):
    Image.fromarray(m.astype(np.uint16) * 65535).save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def grey_with_alpha(m, p):
    Image.fromarray(m * 255, "L").convert("LA").save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def rgb_white(m, p):
    Image.fromarray(np.repeat(m[..., None] * 255, 3, axis=2)).save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def rgb_red(m, p):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = m * 255
    Image.fromarray(rgb).convert("RGBA").save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def jpeg_damaged(m, p):  # a {0, 255} mask saved as JPEG: values like 3 and 252 around the edges
    Image.fromarray(m * 255, "L").save(p.with_suffix(".jpg"), quality=60)
    values = np.asarray(Image.open(p.with_suffix(".jpg")))
    assert ((values > 0) & (values < 255)).any()  # (the case under test)
    return p.with_suffix(".jpg")


def float_tiff(m, p):
    Image.fromarray(m.astype(np.float32)).save(p.with_suffix(".tif"))
    return p.with_suffix(".tif")


MASK_ROWS = [
    kaggle_gif,
    white_at_index_0,
    inverted_palette_png,
    palette_without_colours,
    red_car_at_index_3,
    grey((0, 255)),
    grey((0, 1)),
    one_bit,
    sixteen_bit,
    grey_with_alpha,
    rgb_white,
    rgb_red,
    jpeg_damaged,
    float_tiff,
]


@pytest.mark.parametrize("save", MASK_ROWS, ids=lambda f: f.__name__)
def test_a_mask_reads_as_the_car_it_shows(save, tmp_path):
    expected = truth()
    mask = read_mask(save(expected, tmp_path / "mask"))
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    if save is jpeg_damaged:  # lossy: the middle grey level separates car from background
        assert (mask != expected).mean() < 0.02
    else:
        assert np.array_equal(mask, expected)


def test_a_mask_of_neither_labels_nor_black_and_white_is_refused(tmp_path):
    path = grey((0, 100))(truth(), tmp_path / "mask")
    with pytest.raises(UnreadableFileError) as err:
        read_mask(path)
    assert err.value.path == path and "0 for background" in err.value.reason


# --- images --------------------------------------------------------------------------------------
def reference() -> np.ndarray:
    """A grey ramp with detail, as uint8 RGB."""
    ramp = np.linspace(20, 230, W, dtype=np.float64)[None, :] + np.linspace(-15, 15, H)[:, None]
    return np.repeat(ramp.round().astype(np.uint8)[..., None], 3, axis=2)


@dataclass(frozen=True)
class ImageRow:
    name: str
    save: Callable[[np.ndarray, Path], Path]
    tolerance: float = 1.0  # mean absolute difference allowed (JPEG)


def _pil(mode: str, suffix: str, convert: Callable | None = None):
    def save(rgb, p):
        image = Image.fromarray(rgb) if convert is None else convert(rgb)
        image.convert(mode).save(p.with_suffix(suffix))
        return p.with_suffix(suffix)

    return save


def _grey16(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)


def _rgb16(rgb, p):
    cv2.imwrite(str(p.with_suffix(".png")), (rgb[..., ::-1].astype(np.uint16) * 257))
    return p.with_suffix(".png")


def _int32(rgb, p):
    Image.fromarray(rgb[..., 0].astype(np.int32) * 257).save(p.with_suffix(".tif"))
    return p.with_suffix(".tif")


def _float(rgb, p):
    Image.fromarray(rgb[..., 0].astype(np.float32) / 255).save(p.with_suffix(".tif"))
    return p.with_suffix(".tif")


IMAGE_ROWS = [
    ImageRow("RGB PNG", _pil("RGB", ".png")),
    ImageRow("16-bit grey PNG (I;16)", lambda rgb, p: _pil("I;16", ".png", _grey16)(rgb, p)),
    ImageRow("16-bit big-endian TIFF (I;16B)", lambda rgb, p: _big_endian(rgb, p)),
    ImageRow("16-bit RGB PNG", _rgb16),
    ImageRow("32-bit integer TIFF (I)", _int32),
    ImageRow("float TIFF (F) in [0, 1]", _float),
    ImageRow("grey (L) PNG", _pil("L", ".png")),
    ImageRow("grey with alpha (LA)", _pil("LA", ".png")),
    ImageRow("palette (P)", lambda rgb, p: _palette(rgb, p)),
    ImageRow("RGBA PNG", _pil("RGBA", ".png")),
    ImageRow("CMYK TIFF", _pil("CMYK", ".tif")),
    ImageRow("YCbCr TIFF", _pil("YCbCr", ".tif")),
    ImageRow("grey JPEG", _pil("L", ".jpg"), tolerance=3.0),
    ImageRow("BMP", _pil("RGB", ".bmp")),
    ImageRow("WebP (lossless)", lambda rgb, p: _webp(rgb, p)),
]


def _big_endian(rgb, p):
    image = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257).astype(">u2"))
    assert image.mode == "I;16B"  # (the case under test)
    image.save(p.with_suffix(".tif"))
    return p.with_suffix(".tif")


def _palette(rgb, p):
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(p.with_suffix(".png"))
    return p.with_suffix(".png")


def _webp(rgb, p):
    Image.fromarray(rgb).save(p.with_suffix(".webp"), lossless=True)
    return p.with_suffix(".webp")


@pytest.mark.parametrize("row", IMAGE_ROWS, ids=lambda r: r.name)
def test_an_image_reads_as_the_picture_it_shows(row, tmp_path):
    expected = reference()
    image, size = read_image(row.save(expected, tmp_path / "image"))
    assert image.dtype == np.uint8 and image.shape == (H, W, 3) and size == (H, W)
    assert np.abs(image.astype(int) - expected.astype(int)).mean() <= row.tolerance


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty (0 bytes)"),
        (b"these are notes, not a photo\n", "not a readable image"),
        ("cut", "truncated"),
    ],
    ids=["0-byte file", "text file named .jpg", "cut-off JPEG header"],
)
def test_an_unreadable_file_is_named_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "photo.jpg"
    if content == "cut":  # the first 200 bytes of a real JPEG
        Image.fromarray(reference()).save(path, quality=95)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    for read in (read_image, read_header):
        with pytest.raises(UnreadableFileError) as err:
            read(path)
        assert err.value.path == path and reason in err.value.reason
        assert str(path) in str(err.value)


def test_an_image_past_the_pixel_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (400, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400 * 300 // 2)  # warned: refused too
    with pytest.raises(CarsegError, match="decompression-bomb limit"):
        read_image(path)


@pytest.fixture
def carvana(tiny_set, tmp_path) -> Path:
    """A private copy of the tiny generated set (5 cars x 16 views, 80x120) to break."""
    root = tmp_path / "carvana"
    shutil.copytree(tiny_set, root)
    return root


def first(root: Path, n: int = 1) -> list[str]:
    return sorted(p.stem for p in (root / "train").glob("*.jpg"))[:n]


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


def mask_path(root: Path, image_id: str) -> Path:
    return root / "train_masks" / f"{image_id}_mask.gif"


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


def _oriented(path, array: np.ndarray, orientation: int, mode: str | None = None) -> None:
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_images_and_masks_read_as_displayed_under_every_exif_orientation(tmp_path, orientation):
    """A phone photo tagged with an orientation is read as a viewer shows it (Pillow's
    exif_transpose), its size too, and its mask, tagged alike, turns with it."""
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    _oriented(tmp_path / "photo.jpg", stored, orientation)
    with Image.open(tmp_path / "photo.jpg") as img:
        shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    image, size = read_image(tmp_path / "photo.jpg")
    assert image.shape == shown.shape and np.array_equal(image, shown)
    assert size == shown.shape[:2] == read_header(tmp_path / "photo.jpg")[0]
    if orientation in (5, 6, 7, 8):
        assert size == (40, 24)  # turned a quarter: the sides swap
    mask = np.zeros((24, 40), np.uint8)
    mask[2:10, 3:30] = 255  # not symmetric: every turn and flip shows
    _oriented(tmp_path / "mask.png", mask, orientation, "L")
    with Image.open(tmp_path / "mask.png") as img:
        expected = (np.asarray(ImageOps.exif_transpose(img)) > 127).astype(np.uint8)
    assert np.array_equal(read_mask(tmp_path / "mask.png"), expected)
    # the reduced JPEG decode keeps the orientation and asks for the displayed size
    small, original = read_image(tmp_path / "photo.jpg", at_least=(size[0] // 2, size[1] // 2))
    assert original == size and small.shape[0] / small.shape[1] == pytest.approx(
        size[0] / size[1], rel=0.1
    )


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_a_photo_saved_as_a_mask_is_refused(tiny_set, tmp_path, mode):
    """A colour (or grey, or palette) photo is not two-valued: read as a mask it would make up
    a car, so it is refused naming the file; a {0, 255} mask JPEG-damaged along its edges and
    an anti-aliased one are not."""
    photo = Image.open(sorted((tiny_set / "train").iterdir())[0]).convert(mode)
    photo.save(tmp_path / "photo_mask.png")
    with pytest.raises(UnreadableFileError, match="photo_mask.png.*not a black-and-white mask"):
        read_mask(tmp_path / "photo_mask.png")
    mask = np.zeros((80, 120), np.uint8)
    mask[20:60, 30:90] = 255
    soft = np.asarray(Image.fromarray(mask).resize((60, 40), Image.Resampling.BILINEAR))
    Image.fromarray(soft).save(tmp_path / "soft.png")  # grey only along the edge
    assert read_mask(tmp_path / "soft.png").sum() > 0
