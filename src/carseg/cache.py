"""A disk cache of images and masks already resized to the training size, memory-mapped.

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
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from carseg.data import CarvanaDataset

log = logging.getLogger(__name__)

FORMAT = 1


def cache_key(dataset: CarvanaDataset, size: Sequence[int]) -> str:
    """A hash of the target size and of every source file's name, size and modification time."""
    sources = [dataset.image_paths[i] for i in dataset.ids]
    sources += [dataset.mask_paths[i] for i in dataset.ids if i in dataset.mask_paths]
    if dataset.rles:
        sources.append(dataset.root / "train_masks.csv")
    entries = []
    for path in sources:
        stat = path.stat()
        entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    record = {
        "format": FORMAT,
        "size": [int(s) for s in size],
        "ids": dataset.ids,
        "files": entries,
    }
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
    def build(cls, dataset: CarvanaDataset, size: Sequence[int], cache_dir: Path) -> ResizedCache:
        """The cache of ``dataset`` at ``size`` (height, width) in ``cache_dir``, built if new."""
        height, width = int(size[0]), int(size[1])
        folder = Path(cache_dir) / f"{height}x{width}-{cache_key(dataset, size)}"
        if (folder / "index.json").is_file():
            log.info("Using the resized-image cache %s", folder)
            return cls(folder)
        started = time.perf_counter()
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        try:
            n = len(dataset.ids)
            images = np.memmap(tmp / "images.u8", np.uint8, "w+", shape=(n, height, width, 3))
            masks = np.memmap(tmp / "masks.u8", np.uint8, "w+", shape=(n, height, width))
            for i, image_id in enumerate(dataset.ids):
                image, mask = dataset.read_pair(image_id)
                images[i] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                masks[i] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            images.flush()
            masks.flush()
            del images, masks
            meta = {"format": FORMAT, "size": [height, width], "ids": list(dataset.ids)}
            (tmp / "index.json").write_text(json.dumps(meta))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process (a DDP rank) finished the same cache first
                if not (folder / "index.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info(
            "Built the resized-image cache %s (%d images) in %.1f s",
            folder,
            len(dataset.ids),
            time.perf_counter() - started,
        )
        return cls(folder)
