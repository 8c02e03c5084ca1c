"""Run-length encoding of binary masks, exactly as Kaggle's Carvana ``train_masks.csv`` uses it.

Format: space-separated pairs ``"start length"``; ``start`` is 1-based; pixels are numbered row by
row (row-major, C order) over the ``(height, width)`` array, i.e. ``1280 x 1918`` for Carvana.
The empty mask encodes as the empty string. CSV files have the header ``img,rle_mask`` and ``img``
keeps the image's file name with its extension (``00087a6bd4dc_01.jpg``).

numpy only; no Python loop over pixels.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

CSV_HEADER = ("img", "rle_mask")


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = foreground) as a Kaggle RLE string."""
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D (height, width) mask, got shape {mask.shape}")
    flat = np.asarray(mask).ravel(order="C") != 0
    # Pad with background on both sides so every run has a rising and a falling edge.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])).astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts + 1  # 1-based
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into a ``uint8`` mask of ``shape`` (height, width), values {0, 1}.

    Raises:
        ValueError: the string is not a valid encoding for ``shape`` (see ``rle_validate``).
    """
    height, width = shape
    size = height * width
    starts, ends = _parse_runs(rle, size, shape)
    # Mark run boundaries with +1/-1 and integrate: O(pixels) with no Python loop.
    delta = np.zeros(size + 1, dtype=np.int8)
    delta[starts] += 1
    delta[ends] -= 1  # runs neither overlap nor touch an equal start, so no index repeats per array
    return np.cumsum(delta[:-1], dtype=np.int8).astype(np.uint8).reshape(shape)


def rle_validate(rle: str, shape: tuple[int, int]) -> None:
    """Check that ``rle`` is a valid encoding for a ``shape`` mask, without building the mask.

    Raises:
        ValueError: not a string, non-integer tokens, an odd number of values, a start below 1, a
            length below 1, runs out of order or overlapping, or a run past the last pixel.
    """
    _parse_runs(rle, shape[0] * shape[1], shape)


def _parse_runs(rle: str, size: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """0-based run starts and (exclusive) ends of a checked RLE string."""
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if not tokens:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if len(tokens) % 2:
        raise ValueError(
            f"RLE has an odd number of values ({len(tokens)}): it must be 'start length' pairs"
        )
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(t for t in tokens if not t.lstrip("-").isdigit() or len(t) > 18)
        raise ValueError(f"RLE holds a value that is not a pixel count: {bad[:40]!r}") from None
    starts, lengths = values[0::2] - 1, values[1::2]
    if starts.min() < 0:
        raise ValueError("RLE starts are 1-based: found a start below 1")
    if lengths.min() < 1:
        raise ValueError("RLE run lengths must be at least 1")
    ends = starts + lengths
    if ends.max() > size:
        raise ValueError(
            f"RLE run ends at pixel {int(ends.max())}, past the {size} pixels of a "
            f"{shape[0]}x{shape[1]} mask: is the shape right?"
        )
    if np.any(starts[1:] < ends[:-1]):
        raise ValueError("RLE runs overlap or are out of order: starts must increase past each run")
    return starts, ends


def read_rle_csv(path: str | Path) -> dict[str, str]:
    """Read an ``img,rle_mask`` CSV into ``{image file name: rle}``.

    Raises:
        ValueError: the header is not ``img,rle_mask``, a row has not two fields, or a name repeats;
            the message gives the line number.
    """
    return {name: rle for _, name, rle in read_rle_rows(path)}


def read_rle_rows(path: str | Path) -> list[tuple[int, str, str]]:
    """The ``(line number, image file name, rle)`` rows of an ``img,rle_mask`` CSV.

    Raises:
        ValueError: as ``read_rle_csv``.
    """
    path = Path(path)
    rows: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the header
    try:  # (newline="": a file name may hold \r, quoted by the writer)
        with path.open(encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})"
        ) from None
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise ValueError(f"{path}: expected the header 'img,rle_mask', found {header!r}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue  # a blank line
            if len(row) != 2:
                raise ValueError(
                    f"{path}, line {line}: expected 2 fields (img,rle_mask), got {row}"
                )
            name = row[0].strip(" \t")  # (not str.strip: a name may hold U+2028, U+0085 ...)
            if name in seen:
                raise ValueError(f"{path}, line {line}: image {name!r} is listed twice")
            seen.add(name)
            rows.append((line, name, row[1]))
    return rows


def write_rle_csv(path: str | Path, rows: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write ``(image file name, rle)`` rows as an ``img,rle_mask`` CSV, in the order given."""
    items = rows.items() if isinstance(rows, Mapping) else rows
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(items)
