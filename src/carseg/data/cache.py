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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from carseg.data.transforms import resize_image, resize_mask
from carseg.utils.atomic import atomic_dir

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
    def build(
        cls, source: Source, size: Sequence[int], cache_dir: Path, threads: int
    ) -> ResizedCache:
        """The cache of ``source``'s items at ``size`` (height, width) in ``cache_dir``, built if
        new, decoding on ``threads`` threads (Pillow and OpenCV decode and resize without the
        GIL: the build takes about 1/threads of the time)."""
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

            def resized(image_id: str) -> tuple[np.ndarray, np.ndarray]:
                image, mask = source.read_pair(image_id)
                return resize_image(image, (height, width)), resize_mask(mask, (height, width))

            with ThreadPoolExecutor(max(1, threads)) as pool:
                for i, (image, mask) in enumerate(pool.map(resized, ids)):
                    images[i], masks[i] = image, mask
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
    """Every mask of a data set decoded once, kept on disk 1 bit a pixel, memory-mapped.

    A 1918x1280 GIF mask takes about 10 ms to decode; unpacking its 307 KB of bits takes well
    under 1 ms. The store is built in ``setup`` (decoded on a thread pool, written as it goes,
    under a temporary name) into ``cache_dir``, keyed like ``ResizedCache`` by the source files,
    and reused by later runs. Every process maps the one file: DDP ranks and loader workers,
    forked or spawned, share its pages. Kaggle's 5,088 masks take 1.6 GB.
    """

    def __init__(self, folder: Path) -> None:
        index = json.loads((folder / "index.json").read_text())
        self.folder = folder
        self.shapes = {k: (int(v[0]), int(v[1])) for k, v in index["shapes"].items()}
        self.starts = {k: int(v) for k, v in index["starts"].items()}
        self._bits: np.ndarray | None = None  # mapped on first use, in each process

    def __getstate__(self) -> dict:  # a spawned worker maps the file itself
        return {**self.__dict__, "_bits": None}

    @classmethod
    def build(cls, source: Source, cache_dir: Path, threads: int) -> MaskStore:
        """The store of ``source``'s masks in ``cache_dir``, decoded on ``threads`` threads if
        new."""
        ids = list(source.ids)
        folder = Path(cache_dir) / f"masks-{cache_key(ids, source.source_files(), (0, 0))}"
        if (folder / "index.json").is_file():
            log.info("Using the mask store %s", folder)
            return cls(folder)
        started = time.perf_counter()
        shapes, starts, offset = {}, {}, 0
        with atomic_dir(folder) as tmp, (tmp / "masks.bits").open("wb") as f:
            with ThreadPoolExecutor(max(1, threads)) as pool:
                for image_id, mask in zip(ids, pool.map(source.load_mask, ids), strict=True):
                    packed = np.packbits(mask.reshape(-1))
                    shapes[image_id], starts[image_id] = list(mask.shape), offset
                    f.write(packed.tobytes())
                    offset += packed.size
            f.close()
            (tmp / "index.json").write_text(json.dumps({"shapes": shapes, "starts": starts}))
        log.info(
            "Decoded %d masks into the store %s (%.0f MiB) in %.1f s",
            len(ids),
            folder,
            offset / 2**20,
            time.perf_counter() - started,
        )
        return cls(folder)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.shapes

    def get(self, image_id: str) -> np.ndarray:
        """The mask, ``uint8`` ``(H, W)`` in {0, 1}."""
        if self._bits is None:
            path = self.folder / "masks.bits"
            self._bits = np.memmap(path, np.uint8, "r") if path.stat().st_size else np.zeros(0)
        height, width = self.shapes[image_id]
        start = self.starts[image_id]
        packed = self._bits[start : start + (height * width + 7) // 8]
        return np.unpackbits(packed, count=height * width).reshape(height, width)
