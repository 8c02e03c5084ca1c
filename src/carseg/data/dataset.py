"""Carvana images and masks on disk, as Kaggle laid them out: a torch ``Dataset``.

Layout read (Kaggle's "Carvana Image Masking Challenge")::

    <root>/train/<car>_<view>.jpg               (or train_hq/, the 1918x1280 high-quality JPEGs)
    <root>/train_masks/<car>_<view>_mask.gif    palette GIF, values {0, 1} (or .png)
    <root>/train_masks.csv                      img,rle_mask: the masks not in train_masks/

A car has 16 views (``_01`` .. ``_16``); the car id is the file name up to its last ``_``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from carseg.data.cache import MaskStore, ResizedCache
from carseg.data.file_checks import Problem, check_dataset
from carseg.data.image_io import (
    IMAGE_EXTENSIONS,
    LOSSY_MASK_EXTENSIONS,
    MASK_EXTENSIONS,
    read_header,
    read_image,
    read_mask,
)
from carseg.data.rle import read_rle_rows, rle_decode
from carseg.data.transforms import resize_mask
from carseg.utils.errors import DataError, DataNotFoundError

log = logging.getLogger(__name__)

MASK_DIR = "train_masks"
MASK_CSV = "train_masks.csv"
LAYOUT_HELP = """\
Expected Kaggle's Carvana layout:
    <root>/train/<car>_<view>.jpg             (or train_hq/)
    <root>/train_masks/<car>_<view>_mask.gif  (or train_masks.csv with img,rle_mask rows)
Get it from https://www.kaggle.com/c/carvana-image-masking-challenge/data (an account and the
competition's rules accepted), e.g. with
    kaggle competitions download -c carvana-image-masking-challenge
unzip train.zip and train_masks.zip into <root>, then run with data=carvana data.root=<root>.
Without the data, `data=synthetic` (the default) trains on a generated set in the same layout."""


def _list_files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """``{file stem: path}`` of the files in ``folder`` ending in one of ``extensions``.

    A symbolic link that loops or points nowhere is listed too: the data check names it, where
    leaving it out would lose an image without a word.
    """
    if not folder.is_dir():
        return {}
    found = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.lower().endswith(extensions):
                continue
            try:
                listed = entry.is_file() or entry.is_symlink()
            except OSError:  # a symbolic link that loops (ELOOP)
                listed = True
            if listed:
                found[Path(entry.name).stem] = Path(entry.path)
    return found


class CarvanaDataset(Dataset):
    """Images and masks of a Carvana folder.

    The folder is listed once at construction. Each image's mask is ``train_masks/<id>_mask.gif``
    (or ``.png``, ``.jpg``) where that file exists, else its row of ``train_masks.csv``.

    Args:
        root: the folder holding ``train/`` (or ``train_hq/``) and the masks.
        ids: image ids to use (file names without extension); all images if None.
        transform: an albumentations transform taking ``image`` and ``mask``; without one, items
            are the raw arrays.
        image_dir: ``"train"`` or ``"train_hq"``.
        skip_missing_masks: leave out images without a mask (with a warning) instead of stopping.
        decode_size: (height, width) the transform resizes to: JPEGs are decoded at a reduced
            scale no smaller than that (see ``carseg.data.image_io.read_image``). None: full size.
        cache: a ``ResizedCache`` holding this set's images and masks already resized: items come
            from it instead of the files.
        masks: a ``MaskStore`` holding this set's masks decoded: masks come from it.

    Items are ``(image, mask)``: with the usual transforms a float tensor ``(3, H, W)`` and a float
    tensor ``(1, H, W)`` in {0, 1}; without, ``uint8`` arrays ``(H, W, 3)`` and ``(H, W)``.
    """

    def __init__(
        self,
        root: str | Path,
        ids: Sequence[str] | None = None,
        transform: A.Compose | None = None,
        *,
        image_dir: str,
        skip_missing_masks: bool = False,
        decode_size: Sequence[int] | None = None,
        cache: ResizedCache | None = None,
        masks: MaskStore | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.masks = masks
        self.decode_size = tuple(decode_size) if decode_size is not None else None
        self.cache = cache
        self.image_dir = self.root / image_dir
        self.transform = transform
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"data.root={self.root} is a file, not a folder\n{LAYOUT_HELP}")
        if not self.root.is_dir():
            raise DataNotFoundError(f"Carvana data folder not found: {self.root}\n{LAYOUT_HELP}")
        if not self.image_dir.is_dir():
            raise DataNotFoundError(
                f"No image folder {self.image_dir} in {self.root}\n{LAYOUT_HELP}"
            )
        images = _list_files(self.image_dir, IMAGE_EXTENSIONS)
        if not images:
            raise DataNotFoundError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {self.image_dir}\n{LAYOUT_HELP}"
            )
        chosen = sorted(images) if ids is None else list(ids)
        unknown = [i for i in chosen if i not in images]
        if unknown:
            raise DataError(
                f"{len(unknown)} requested ids are not in {self.image_dir}: "
                f"{', '.join(unknown[:10])}"
            )
        self._find_masks(chosen)
        has_mask = self.mask_paths.keys() | self.rles.keys()
        missing = [i for i in chosen if i not in has_mask]
        if missing:
            chosen = self._without_masks(chosen, missing, skip_missing_masks)
        self.ids = chosen
        self.image_paths = {i: images[i] for i in chosen}

    def subset(
        self,
        ids: Sequence[str],
        transform: A.Compose | None = None,
        decode_size: Sequence[int] | None = None,
        cache: ResizedCache | None = None,
        masks: MaskStore | None = None,
    ) -> CarvanaDataset:
        """The images ``ids`` of this set, with their own transform and sources, without listing
        the folder again.

        Raises:
            DataError: ids this set does not hold.
        """
        unknown = [i for i in ids if i not in self.image_paths]
        if unknown:
            raise DataError(f"{len(unknown)} ids are not in this set: {', '.join(unknown[:10])}")
        part = copy.copy(self)
        part.ids = list(ids)
        part.image_paths = {i: self.image_paths[i] for i in ids}
        part.mask_paths = {i: self.mask_paths[i] for i in ids if i in self.mask_paths}
        part.rles = {i: self.rles[i] for i in ids if i in self.rles}
        part.rle_lines = {i: self.rle_lines[i] for i in ids if i in self.rle_lines}
        part.transform = transform
        part.decode_size = tuple(decode_size) if decode_size is not None else None
        part.cache = cache
        part.masks = masks
        return part

    def _find_masks(self, chosen: list[str]) -> None:
        """Mask files for ``chosen`` first, then RLE rows for the rest."""
        files = {
            stem.removesuffix("_mask"): path
            for stem, path in _list_files(self.root / MASK_DIR, MASK_EXTENSIONS).items()
        }
        self.mask_paths: dict[str, Path] = {i: files[i] for i in chosen if i in files}
        self.rles: dict[str, str] = {}
        self.rle_lines: dict[str, int] = {}  # line of each RLE row in train_masks.csv
        csv_path = self.root / MASK_CSV
        if len(self.mask_paths) < len(chosen) and csv_path.is_file():
            try:
                rows = read_rle_rows(csv_path)
            except ValueError as err:
                raise DataError(str(err)) from None
            wanted = set(chosen) - self.mask_paths.keys()
            for line, name, rle in rows:
                stem = Path(name).stem
                if stem in wanted:
                    self.rles[stem], self.rle_lines[stem] = rle, line
        lossy = [p for p in self.mask_paths.values() if p.suffix.lower() in LOSSY_MASK_EXTENSIONS]
        if lossy:
            log.warning(
                "%d masks in %s are JPEGs (e.g. %s): compression blurs their edges; they are read "
                "as car above the middle grey level. Lossless GIF or PNG masks are exact.",
                len(lossy),
                self.root / MASK_DIR,
                lossy[0].name,
            )

    def _without_masks(self, chosen: list[str], missing: list[str], skip: bool) -> list[str]:
        """``chosen`` without ``missing`` if ``skip``; else stop, saying where masks were sought."""
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        mask_dir, csv_path = self.root / MASK_DIR, self.root / MASK_CSV
        looked = [
            f"{mask_dir}/<id>_mask{{{','.join(MASK_EXTENSIONS)}}}"
            + ("" if mask_dir.is_dir() else " (no such folder)"),
            f"{csv_path}" + ("" if csv_path.is_file() else " (no such file)"),
        ]
        message = (
            f"{len(missing)} of {len(chosen)} images in {self.image_dir} have no mask: {shown}\n"
            f"Looked for {looked[0]} and for a row in {looked[1]}"
        )
        if not mask_dir.is_dir() and not csv_path.is_file():
            raise DataNotFoundError(f"No masks for {self.image_dir}: {message}\n{LAYOUT_HELP}")
        if not skip:
            raise DataNotFoundError(
                f"{message}\nAdd their masks, remove the images, or train without them with "
                "data.on_bad_file=skip"
            )
        log.warning("%s; training without them (data.on_bad_file=skip)", message)
        kept = [i for i in chosen if i not in set(missing)]
        if not kept:
            raise DataNotFoundError(f"No image in {self.image_dir} has a mask")
        return kept

    def __len__(self) -> int:
        return len(self.ids)

    def source_files(self) -> list[Path]:
        """Every file this set's items are read from (for a cache key)."""
        files = [self.image_paths[i] for i in self.ids]
        files += [self.mask_paths[i] for i in self.ids if i in self.mask_paths]
        if self.rles:
            files.append(self.root / MASK_CSV)
        return files

    def load_image(self, image_id: str, at_least: Sequence[int] | None = None) -> np.ndarray:
        """The image as ``uint8`` RGB ``(H, W, 3)``, at its original size unless ``at_least``
        allows a reduced JPEG decode (see ``carseg.data.image_io.read_image``)."""
        return read_image(self.image_paths[image_id], at_least)[0]

    def load_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The mask as ``uint8`` ``(H, W)`` in {0, 1}; ``shape`` is needed for RLE masks (read from
        the image's header if not given)."""
        if self.masks is not None and image_id in self.masks:
            return self.masks.get(image_id)
        if image_id in self.mask_paths:
            return read_mask(self.mask_paths[image_id])
        if shape is None:
            shape, _ = read_header(self.image_paths[image_id])
        try:
            return rle_decode(self.rles[image_id], shape)
        except ValueError as err:
            line = self.rle_lines.get(image_id, "?")
            raise DataError(f"{self.root / MASK_CSV}, line {line}: {err}") from None

    def read_pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask as arrays of the same size (reduced if ``decode_size`` allows it).

        Raises:
            DataError: a file cannot be decoded, or the mask's size is not its image's.
        """
        image, original = read_image(self.image_paths[image_id], self.decode_size)
        mask = self.load_mask(image_id, original)
        if mask.shape != original:
            raise DataError(
                f"Mask of {image_id} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{original[1]}x{original[0]}: each mask must match its image's size"
            )
        # the JPEG was decoded at a reduced scale: the mask follows it
        mask = resize_mask(mask, image.shape[:2])
        return image, mask

    def problems(self) -> list[Problem]:
        """Everything wrong with this set's files that their headers show (see
        ``carseg.data.file_checks``)."""
        return check_dataset(self.image_paths, self.mask_paths, self.rles, self.rle_lines)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        if self.cache is not None:
            image, mask = self.cache.get(image_id)
        else:
            image, mask = self.read_pair(image_id)
        if self.transform is None:
            return image, mask
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"].unsqueeze(0).float()
