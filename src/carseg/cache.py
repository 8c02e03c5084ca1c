"""Caches of decoded data: images and masks resized to the training size on disk, memory-mapped
(``ResizedCache``), and every mask decoded once and kept in memory (``MaskStore``).

Decoding a 1918x1280 JPEG and its GIF mask costs far more than the rest of an item's pipeline. The
cache does it once: every image and mask is decoded (JPEGs at a reduced scale), resized to the
training size and stored as ``uint8`` arrays in two files that every epoch, and every loader worker,
maps read-only. It is keyed by the size and by the name, byte size and modification time of every
source file, so a changed source makes a new cache; a cache is written under a temporary name and
renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from carseg.atomic import atomic_dir

log = logging.getLogger(__name__)

FORMAT = 1


class Source(Protocol):
    """What the cache reads from (``CarvanaDataset`` is one): ids, items, and their files."""

    ids: Sequence[str]

    def read_pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Image uint8 (H, W, 3) and mask uint8 (H, W) in {0, 1}, at any size."""

    def source_files(self) -> list[Path]:
        """Every file the items are read from: a change to any of them makes a new cache."""


def cache_key(ids: Sequence[str], sources: Sequence[Path], size: Sequence[int]) -> str:
    """A hash of the target size, the ids and every source file's name, size and mtime."""
    entries = []
    for path in sources:
        stat = path.stat()
        entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    record = {"format": FORMAT, "size": [int(s) for s in size], "ids": list(ids), "files": entries}
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:20]


class ResizedCache:
    """Read-only view of a built cache: ``get(image_id) -> (image (H, W, 3), mask (H, W))``."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "index.json").read_text())
        self.folder = folder
        self.size = tuple(meta["size"])
        self.index = {image_id: n for n, image_id in enumerate(meta["ids"])}
        n, (height, width) = len(meta["ids"]), self.size
        self._images = np.memmap(folder / "images.u8", np.uint8, "r", shape=(n, height, width, 3))
        self._masks = np.memmap(folder / "masks.u8", np.uint8, "r", shape=(n, height, width))

    def get(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.index[image_id]
        # copies: the transforms write into their inputs, the maps are read-only
        return np.array(self._images[n]), np.array(self._masks[n])

    @classmethod
    def build(cls, source: Source, size: Sequence[int], cache_dir: Path) -> ResizedCache:
        """The cache of ``source``'s items at ``size`` (height, width) in ``cache_dir``, built if
        new."""
        ids = list(source.ids)
        height, width = int(size[0]), int(size[1])
        key = cache_key(ids, source.source_files(), size)
        folder = Path(cache_dir) / f"{height}x{width}-{key}"
        if (folder / "index.json").is_file():
            log.info("Using the resized-image cache %s", folder)
            return cls(folder)
        started = time.perf_counter()
        with atomic_dir(folder) as tmp:
            n = len(ids)
            images = np.memmap(tmp / "images.u8", np.uint8, "w+", shape=(n, height, width, 3))
            masks = np.memmap(tmp / "masks.u8", np.uint8, "w+", shape=(n, height, width))
            for i, image_id in enumerate(ids):
                image, mask = source.read_pair(image_id)
                images[i] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                masks[i] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            images.flush()
            masks.flush()
            del images, masks
            meta = {"format": FORMAT, "size": [height, width], "ids": list(ids)}
            (tmp / "index.json").write_text(json.dumps(meta))
        log.info(
            "Built the resized-image cache %s (%d images) in %.1f s",
            folder,
            len(ids),
            time.perf_counter() - started,
        )
        return cls(folder)


class MaskStore:
    """Every mask of a data set decoded once and kept in memory, 1 bit a pixel.

    A 1918x1280 GIF mask takes about 10 ms to decode; unpacking its 307 KB of bits takes well
    under 1 ms. The store is built in ``setup`` (decoded on a thread pool) as one buffer, which
    loader workers forked afterwards share (they only read it). Kaggle's 5,088 masks take 1.6 GB.
    """

    def __init__(
        self, shapes: dict[str, tuple[int, int]], starts: dict[str, int], bits: np.ndarray
    ):
        self.shapes = shapes
        self.starts = starts
        self.bits = bits  # uint8: every mask's packed bits, one after the other

    @classmethod
    def build(
        cls, ids: Sequence[str], read_mask: Callable[[str], np.ndarray], threads: int
    ) -> MaskStore:
        """Decode ``read_mask(image_id)`` for every id on ``threads`` threads and pack it."""
        started = time.perf_counter()
        with ThreadPoolExecutor(max(1, threads)) as pool:
            masks = list(pool.map(lambda i: _packed(read_mask(i)), ids))
        shapes, starts, offset = {}, {}, 0
        for image_id, (shape, packed) in zip(ids, masks, strict=True):
            shapes[image_id], starts[image_id] = shape, offset
            offset += packed.size
        bits = np.empty(offset, np.uint8)
        for image_id, (_, packed) in zip(ids, masks, strict=True):
            bits[starts[image_id] : starts[image_id] + packed.size] = packed
        log.info(
            "Decoded %d masks into memory (%.0f MiB) in %.1f s",
            len(ids),
            bits.nbytes / 2**20,
            time.perf_counter() - started,
        )
        return cls(shapes, starts, bits)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.shapes

    def get(self, image_id: str) -> np.ndarray:
        """The mask, ``uint8`` ``(H, W)`` in {0, 1}."""
        height, width = self.shapes[image_id]
        start = self.starts[image_id]
        packed = self.bits[start : start + (height * width + 7) // 8]
        return np.unpackbits(packed, count=height * width).reshape(height, width)


def _packed(mask: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    return (int(mask.shape[0]), int(mask.shape[1])), np.packbits(mask.reshape(-1))
