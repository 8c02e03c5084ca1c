"""Images and masks from disk, and masks to disk: every image file carseg reads is opened here.

- ``read_image``: any image Pillow opens, as ``uint8`` RGB. Grey, palette, RGBA, CMYK and YCbCr
  images are converted; 16- and 32-bit images are scaled to 8 bits (Pillow's own conversion
  clips them, which turns a 16-bit photo white). JPEGs can be decoded at a reduced scale.
- ``read_mask``: a mask as {0, 1}, decided from what the file *shows*, not how it stores it: a
  palette mask is read through its palette (a palette may put white at index 0), masks holding
  only 0 and 1 are labels, other masks are black-and-white pictures thresholded at the middle of
  their range (so JPEG-damaged {0, 255} masks stay right). A mask whose values fit neither is
  refused rather than guessed.
- ``read_header``: size and format from the header alone, checking that the file is complete.

Every image and mask is read as it is displayed: an EXIF orientation tag (phone photos carry one)
is applied, so a photo tagged "rotated 180" trains upright against its upright mask, and sizes
are the displayed ones (``read_header`` too).
- ``save_mask``: a {0, 1} mask as a black-and-white palette PNG or GIF, like Kaggle's GIFs.

A file that cannot be read raises ``UnreadableFileError`` (a ``DataError``) naming it and saying
why.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from carseg.utils.errors import CarsegError, DataError, DataNotFoundError, UnreadableFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Kaggle's masks are GIFs; PNG keeps them exact too. JPEG masks are read (thresholded at the
# middle) with a warning: compression blurs their edges.
MASK_EXTENSIONS = (".gif", ".png", ".jpg", ".jpeg")
LOSSY_MASK_EXTENSIONS = (".jpg", ".jpeg")

# The last bytes a complete file of each format ends with.
_TRAILERS = {
    "JPEG": (b"\xff\xd9",),
    "GIF": (b"\x3b",),
    "PNG": (b"IEND\xae\x42\x60\x82",),
}
_TAIL_BYTES = 64  # some writers pad after the closing marker; look a little further back
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = 0x0112  # the EXIF tag
_SWAPS_SIDES = (5, 6, 7, 8)  # orientations shown turned by a quarter: width and height swap
# A mask is black and white: at most this share of its pixels may show a level in the middle
# of its depth's range (between an eighth and seven eighths). A JPEG-compressed or anti-aliased
# mask has a band of them along its edges (8% for a soft 40x60 mask, about 1% at Carvana's
# size); Carvana's photos, read as masks, have 54% to 80% (16 real photos measured).
MAX_GREY_SHARE = 0.25


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation of an open image (1: as stored), 1 when it has none."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # an EXIF block Pillow cannot parse: read the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _displayed(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W[, C]) as a viewer shows it under EXIF ``orientation``, as
    ``PIL.ImageOps.exif_transpose`` turns the image."""
    if orientation in (5, 7):  # transposed (5), then turned half a turn (7)
        array = np.swapaxes(array, 0, 1)
        orientation = 1 if orientation == 5 else 3
    turned = {
        1: array,
        2: array[:, ::-1],
        3: array[::-1, ::-1],
        4: array[::-1],
        6: np.rot90(array, -1),  # stored turned a quarter anticlockwise: shown clockwise
        8: np.rot90(array, 1),
    }[orientation]
    return np.ascontiguousarray(turned) if turned is not array else array


@contextlib.contextmanager
def _opened(path: Path, what: str) -> Iterator[Image.Image]:
    """``Image.open(path)`` whose failures, while opening or decoding in the block, become an
    ``UnreadableFileError`` naming the file.

    Past ``PIL.Image.MAX_IMAGE_PIXELS`` Pillow only warns (it raises past twice that): both are
    refused here, so that a decompression bomb is never decoded.
    """
    if path.is_symlink() and not path.exists():
        raise UnreadableFileError(path, "a symbolic link that loops or points to nothing")
    if path.is_dir():
        raise UnreadableFileError(path, "a folder, not an image file")
    if not path.is_file():
        raise DataNotFoundError(f"{what} not found: {path}")
    with _decoding(path, lambda: path.stat().st_size), Image.open(path) as img:
        yield img


@contextlib.contextmanager
def _decoding(name: object, size: Callable[[], int]) -> Iterator[None]:
    """Pillow's failures in the block (opening or decoding ``name``, of ``size()`` bytes) as an
    ``UnreadableFileError`` naming it; a decompression bomb is refused, not decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except CarsegError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise TooManyPixelsError(
            name,
            f"larger than Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
            f"({err}); raise PIL.Image.MAX_IMAGE_PIXELS only for files you trust",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # UnidentifiedImageError: OSError
        if size() == 0:
            reason = "the file is empty (0 bytes)"
        elif "truncated" in str(err).lower():
            reason = f"truncated: the file ends before its image does ({size()} bytes)"
        elif isinstance(err, UnidentifiedImageError) and not isinstance(name, Path):
            reason = "not an image (no format Pillow reads: JPEG, PNG, WebP, ...)"
        else:
            reason = f"not a readable image ({type(err).__name__}: {err})"
        raise UnreadableFileError(name, reason) from None


class TooManyPixelsError(UnreadableFileError):
    """An image whose header claims more pixels than the reader allows (a decompression bomb)."""


def read_header(path: str | Path) -> tuple[tuple[int, int], str]:
    """``((height, width), format)`` of an image file, from its header, without decoding it; the
    size is the displayed one (an EXIF orientation that turns the image swaps its sides).

    Raises:
        DataError: not an image Pillow can read, truncated (no end marker), or past the
            decompression-bomb limit.
    """
    path = Path(path)
    with _opened(path, "Image") as img:
        size, fmt = (img.height, img.width), img.format or "?"
        if _orientation(img) in _SWAPS_SIDES:
            size = (img.width, img.height)
    trailers = _TRAILERS.get(fmt)
    if trailers:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            tail = f.read()
        if not any(t in tail for t in trailers):
            raise UnreadableFileError(
                path, f"truncated {fmt} (the file ends before its end marker)"
            )
    return size, fmt


def read_image(
    path: str | Path, at_least: Sequence[int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """An image as ``uint8`` RGB ``(H, W, 3)`` as it is displayed, and its original (displayed)
    ``(height, width)``.

    Args:
        path: the file.
        at_least: (height, width) the caller will resize to. A JPEG is then decoded at the
            smallest of its 1/1, 1/2, 1/4 and 1/8 scales that is at least that big (libjpeg's DCT
            scaling through Pillow's draft mode), which skips most of the decoding work.

    Raises:
        DataError: the file cannot be decoded (its name and the reason are in the message).
    """
    path = Path(path)
    with _opened(path, "Image") as img:
        orientation = _orientation(img)
        stored = (img.height, img.width)
        swapped = orientation in _SWAPS_SIDES
        if at_least is not None and img.format == "JPEG":
            wanted = (at_least[1], at_least[0]) if swapped else at_least
            img.draft("RGB", _draft_request(stored, wanted))
        rgb = _displayed(_to_rgb(img, path), orientation)
    return rgb, (stored[::-1] if swapped else stored)


def decode_image(
    data: bytes, name: str = "the upload", max_pixels: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """``read_image`` for an image held in memory (an upload, never written to disk): ``uint8``
    RGB ``(H, W, 3)`` as displayed, and its displayed ``(height, width)``.

    Args:
        data: the file's bytes.
        name: what error messages call it.
        max_pixels: refuse an image whose header claims more pixels, before decoding it.

    Raises:
        TooManyPixelsError: more than ``max_pixels`` (or Pillow's decompression-bomb limit).
        UnreadableFileError: empty, truncated, or not an image Pillow reads.
    """
    try:
        with _decoding(name, lambda: len(data)), Image.open(io.BytesIO(data)) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise TooManyPixelsError(
                    name,
                    f"{img.width}x{img.height} is {img.width * img.height} pixels, more than the "
                    f"limit of {max_pixels}",
                )
            orientation = _orientation(img)
            rgb = _displayed(_to_rgb(img, name), orientation)
    except TooManyPixelsError as err:
        if max_pixels is None or str(max_pixels) in err.reason:
            raise
        raise TooManyPixelsError(  # Pillow refused it while opening: its advice is not ours
            name,
            f"its header claims more than {Image.MAX_IMAGE_PIXELS} pixels (a decompression "
            f"bomb?), more than the limit of {max_pixels}",
        ) from None
    return rgb, rgb.shape[:2]


def _to_rgb(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        grey = _to_uint8(np.asarray(img), img.mode)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGB", "L", "P", "PA", "LA", "RGBA", "RGBX", "CMYK", "YCbCr", "1"):
        return np.asarray(img.convert("RGB"))
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError as err:
        raise UnreadableFileError(
            path, f"its colour mode {img.mode} cannot be read ({err})"
        ) from None


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Grey values of any depth scaled to ``uint8`` 0-255 (by the full range of their depth)."""
    if mode == "F":  # float: [0, 1] or [0, 255]
        scale = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return (np.clip(values / scale, 0, 1) * 255).round().astype(np.uint8)
    values = values.astype(np.int64)
    peak = values.max(initial=0)
    if mode in _SIXTEEN_BIT_MODES or 255 < peak <= 65535:
        return (np.clip(values, 0, 65535) // 257).astype(np.uint8)
    if peak > 65535:  # 32-bit
        return (np.clip(values, 0, 2**32 - 1) // 16843009).astype(np.uint8)
    return np.clip(values, 0, 255).astype(np.uint8)


def _draft_request(original: tuple[int, int], at_least: Sequence[int]) -> tuple[int, int]:
    """The (width, height) to ask Pillow's ``draft`` for so that it picks the largest JPEG scale
    (1, 1/2, 1/4, 1/8) still at least ``at_least`` (height, width), within one pixel.

    Pillow picks ``min(W // w, H // h)`` rounded down to a power of two: asking for 480x320 from
    1918x1280 gives 3, hence 1/2. Asking for ``(W // s, H // s)`` gives exactly ``s``. The pixel of
    slack lets 1918 / 2 = 959 serve a width of 960 (the resize then stretches it by one pixel).
    """
    (height, width), (want_h, want_w) = original, (int(at_least[0]), int(at_least[1]))
    scale = max(s for s in (1, 2, 4, 8) if width / s >= want_w - 1 and height / s >= want_h - 1)
    return width // scale, height // scale


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as ``uint8`` ``(H, W)`` in {0, 1} (1: car).

    What counts as car is decided from the grey level each pixel shows:

    - a palette image is looked up through its palette (the brightest channel of each colour);
      without a palette its indices are the grey levels;
    - RGB masks use the brightest channel (a red or a white car on black both read as car);
    - values that are all 0 or 1 are labels (Kaggle's GIF indices, numpy masks saved as is);
    - otherwise a pixel is car when it is above the middle of its depth's range (127 of 255,
      32767 of 65535), so {0, 255} masks damaged by JPEG compression (3, 252, ...) stay right.

    The mask is read as displayed (its EXIF orientation applied, as for its image).

    Raises:
        DataError: the file cannot be decoded, its values are neither labels nor black and
            white (all non-zero values below the middle: a label map of another scheme), or more
            than ``MAX_GREY_SHARE`` of its pixels are grey (a photo saved as a mask).
    """
    path = Path(path)
    with _opened(path, "Mask") as img:
        orientation = _orientation(img)
        values, levels, depth_max = _mask_values(img)
    values = _displayed(values, orientation)
    if levels is not None:  # 8-bit values: decide per value, then look every pixel up once
        top = int(values.max(initial=0))
        if top <= 1:  # (Kaggle's GIFs) the used values are known without counting them
            used = levels[: top + 1]
        else:
            counts = np.bincount(values.ravel(), minlength=256)[: len(levels)]
            used = levels[counts > 0]
            _check_black_and_white(levels, counts, depth_max, path)
        car = _car(levels, used, depth_max, path)
        if top <= 1 and car[0] == 0 and car[1] == 1:
            return values if orientation != 1 else values.copy()  # (Pillow's is read-only)
        return car[values]
    if int(values.max(initial=0)) > 1:
        levels, counts = np.unique(values, return_counts=True)
        _check_black_and_white(levels, counts, depth_max, path)
    return _car(values, values, depth_max, path)


def _check_black_and_white(
    levels: np.ndarray, counts: np.ndarray, depth_max: int, path: Path
) -> None:
    """Refuse a mask whose pixels are not nearly all near black or near white (a photo, a grey
    picture): reading it as a mask would make up a car.

    Raises:
        UnreadableFileError: the share of middle-grey pixels, and how to save a mask.
    """
    grey = (levels > depth_max / 8) & (levels < depth_max * 7 / 8)
    share = float(counts[grey].sum()) / max(1, int(counts.sum()))
    if share > MAX_GREY_SHARE:
        raise UnreadableFileError(
            path,
            f"not a black-and-white mask: {share:.0%} of its pixels are grey levels between "
            f"black and white (at most {MAX_GREY_SHARE:.0%} may be, along the edges of a "
            "compressed mask). Is it a photo? Save masks with 0 for background and 1 or 255 "
            "for car",
        )


def _car(levels: np.ndarray, used: np.ndarray, depth_max: int, path: Path) -> np.ndarray:
    """``levels`` as {0, 1} car, by the rule of ``read_mask`` applied to the ``used`` levels."""
    peak = int(used.max(initial=0))
    if peak <= 1:
        return (levels == 1).astype(np.uint8)
    middle = depth_max // 2
    if peak <= middle:
        shown = ", ".join(map(str, np.unique(used)[:6])) + (" ..." if len(used) > 6 else "")
        raise UnreadableFileError(
            path,
            f"the mask holds the values {{{shown}}}: not labels 0/1 and not black and white "
            f"(every value is at most {peak} of {depth_max}); save masks with 0 for background "
            "and 1 or 255 for car",
        )
    return (levels > middle).astype(np.uint8)


def _mask_values(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``(values, levels, depth_max)``: the stored values and, for 8-bit values, the grey level
    each value shows (a palette's colours; None where the values are the levels), and the
    largest level of the image's depth."""
    mode = img.mode
    if mode == "1":
        return np.asarray(img).astype(np.uint8), None, 1
    if mode in ("P", "PA"):
        indices = np.asarray(img.convert("P") if mode == "PA" else img)
        entries = np.asarray(img.getpalette() or [], np.uint8).reshape(-1, 3)[:256]
        if indices.max(initial=0) >= len(entries):  # no colour for some index: the indices are it
            return indices, np.arange(256), 255
        return indices, entries.max(axis=1).astype(np.int64), 255
    if mode in ("L", "LA"):
        return np.asarray(img.convert("L") if mode == "LA" else img), np.arange(256), 255
    if mode == "F":  # float: [0, 1] or [0, 255]
        values = np.clip(np.nan_to_num(np.asarray(img)), 0, None)
        scale = 255 if values.max(initial=0) <= 1 else 1
        return (values * scale).round().astype(np.int64), None, 255
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img).astype(np.int64)
        wide = mode != "I" or values.max(initial=0) > 255
        return values, None, 65535 if wide else 255
    return np.asarray(img.convert("RGB")).max(axis=2), np.arange(256), 255


def save_mask(mask: np.ndarray, path: str | Path, format: str | None = None) -> None:
    """A {0, 1} mask as a palette image (PNG or GIF: ``format``, else by the suffix): index 0
    black, index 1 white, like Kaggle's GIFs."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(path, format=format)


def list_images(path: str | Path, recursive: bool) -> list[Path]:
    """The image files at ``path`` (a file, or the images in a folder: directly in it, or in its
    subfolders too with ``recursive``), sorted by path. A symbolic link that loops or points
    nowhere is listed (reading it fails, naming it), not silently left out.

    Raises:
        DataNotFoundError: nothing there, or no image in the folder.
        DataError: ``path`` is neither a file nor a folder.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        if path.exists() or path.is_symlink():
            raise DataError(f"Input {path} is neither an image file nor a folder of images")
        raise DataNotFoundError(
            f"Input not found: {path} (give an image file or a folder of images)"
        )
    candidates = path.rglob("*") if recursive else path.iterdir()
    images = sorted(
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or p.is_symlink())
    )
    if not images:
        hint = "" if recursive else "; recursive=true reads its subfolders too"
        raise DataNotFoundError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {path}: nothing to predict{hint}"
        )
    return images


def subfolders_with_images(path: str | Path) -> list[Path]:
    """The subfolders of ``path`` that hold images (at any depth), which a prediction without
    ``recursive`` does not read."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return []
    found = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in sub.rglob("*")):
            found.append(sub)
    return found
