"""Carvana images and masks on disk, as Kaggle laid them out, and the LightningDataModule over them.

Layout read (Kaggle's "Carvana Image Masking Challenge")::

    <root>/train/<car>_<view>.jpg               (or train_hq/, the 1918x1280 high-quality JPEGs)
    <root>/train_masks/<car>_<view>_mask.gif    palette GIF, values {0, 1}
    <root>/train_masks.csv                      img,rle_mask: used where train_masks/ is absent

A car has 16 views (``_01`` .. ``_16``); the car id is the file name up to its last ``_``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

# albumentations checks PyPI for a newer version at import unless told not to (no network here,
# and no library should phone home on import).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from carseg.cache import ResizedCache  # noqa: E402
from carseg.errors import ConfigError, DataError, DataNotFoundError  # noqa: E402
from carseg.rle import read_rle_rows, rle_decode  # noqa: E402
from carseg.validation import Problem, check_dataset, describe  # noqa: E402

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MASK_EXTENSIONS = (".gif", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LAYOUT_HELP = """\
Expected Kaggle's Carvana layout:
    <root>/train/<car>_<view>.jpg             (or train_hq/)
    <root>/train_masks/<car>_<view>_mask.gif  (or train_masks.csv with img,rle_mask rows)
Get it from https://www.kaggle.com/c/carvana-image-masking-challenge/data (an account and the
competition's rules accepted), e.g. with
    kaggle competitions download -c carvana-image-masking-challenge
unzip train.zip and train_masks.zip into <root>, then run with data=carvana data.root=<root>.
Without the data, `data=synthetic` (the default) trains on a generated set in the same layout."""


def car_id(image_id: str) -> str:
    """``'00087a6bd4dc_01'`` -> ``'00087a6bd4dc'``: the id up to the last underscore."""
    return image_id.rsplit("_", 1)[0]


def split_by_car(
    image_ids: Sequence[str], val_fraction: float = 0.2, seed: int = 42
) -> tuple[list[str], list[str]]:
    """Split image ids into (train, val) so that all views of a car fall on the same side.

    Splitting Carvana by image leaks 15 other views of each validation car into training and
    inflates validation Dice. The split depends only on the set of car ids and ``seed``. At least
    one car goes to each side when there are two cars or more and ``0 < val_fraction < 1``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cars = sorted({car_id(i) for i in image_ids})
    n_val = round(len(cars) * val_fraction)
    if val_fraction > 0 and len(cars) >= 2:
        n_val = min(max(n_val, 1), len(cars) - 1)
    order = np.random.default_rng(seed).permutation(len(cars))
    val_cars = {cars[i] for i in order[:n_val]}
    train = sorted(i for i in image_ids if car_id(i) not in val_cars)
    val = sorted(i for i in image_ids if car_id(i) in val_cars)
    return train, val


def build_transforms(
    size: Sequence[int],
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Resize to ``size`` (height, width), augment if ``train``, normalise, and make tensors.

    Images are resized with pixel-area averaging (``cv2.INTER_AREA``, the antialiased choice for
    shrinking, and what ``carseg.cache`` stores); masks are resized and warped with
    nearest-neighbour (albumentations' default for masks), so they stay binary.
    """
    height, width = size
    steps: list[A.BasicTransform] = [A.Resize(height, width, interpolation=cv2.INTER_AREA)]
    if train:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-5, 5),
                border_mode=0,  # cv2.BORDER_CONSTANT: fill with zeros, image and mask alike
                p=0.5,
            ),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        ]
    steps += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(steps)


def _list_files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """``{file stem: path}`` of the files in ``folder`` ending in one of ``extensions``."""
    with os.scandir(folder) as entries:
        return {
            Path(e.name).stem: Path(e.path)
            for e in entries
            if e.is_file() and e.name.lower().endswith(extensions)
        }


class CarvanaDataset(Dataset):
    """Images and masks of a Carvana folder.

    The folder is listed once at construction; masks come from ``train_masks/<id>_mask.gif`` or,
    when that folder is absent, from the RLE rows of ``train_masks.csv``.

    Args:
        root: the folder holding ``train/`` (or ``train_hq/``) and the masks.
        ids: image ids to use (file names without extension); all images if None.
        transform: an albumentations transform taking ``image`` and ``mask``; without one, items
            are the raw arrays.
        image_dir: ``"train"`` or ``"train_hq"``.
        skip_missing_masks: leave out images without a mask (with a warning) instead of stopping.
        decode_size: (height, width) the transform resizes to: JPEGs are decoded at a reduced
            scale no smaller than that (see ``load_image``). None decodes at full size.
        cache: a ``carseg.cache.ResizedCache`` holding this set's images and masks already resized:
            items come from it instead of the files.

    Items are ``(image, mask)``: with the usual transforms a float tensor ``(3, H, W)`` and a float
    tensor ``(1, H, W)`` in {0, 1}; without, ``uint8`` arrays ``(H, W, 3)`` and ``(H, W)``.
    """

    def __init__(
        self,
        root: str | Path,
        ids: Sequence[str] | None = None,
        transform: A.Compose | None = None,
        image_dir: str = "train",
        skip_missing_masks: bool = False,
        decode_size: Sequence[int] | None = None,
        cache: ResizedCache | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.decode_size = tuple(decode_size) if decode_size is not None else None
        self.cache = cache
        self.image_dir = self.root / image_dir
        self.transform = transform
        if not self.root.is_dir():
            raise DataNotFoundError(f"Carvana data folder not found: {self.root}\n{LAYOUT_HELP}")
        if not self.image_dir.is_dir():
            raise DataNotFoundError(
                f"No image folder {self.image_dir} in {self.root}\n{LAYOUT_HELP}"
            )
        images = _list_files(self.image_dir, IMAGE_EXTENSIONS)
        if not images:
            raise DataNotFoundError(f"No .jpg/.png images in {self.image_dir}\n{LAYOUT_HELP}")

        chosen = sorted(images) if ids is None else list(ids)
        unknown = [i for i in chosen if i not in images]
        if unknown:
            raise DataError(
                f"{len(unknown)} requested ids are not in {self.image_dir}: "
                f"{', '.join(unknown[:10])}"
            )

        mask_dir = self.root / "train_masks"
        csv_path = self.root / "train_masks.csv"
        self.rles: dict[str, str] = {}
        self.rle_lines: dict[str, int] = {}  # line of each RLE row in train_masks.csv
        self.mask_paths: dict[str, Path] = {}
        if mask_dir.is_dir():
            masks = {
                stem.removesuffix("_mask"): path
                for stem, path in _list_files(mask_dir, MASK_EXTENSIONS).items()
            }
            self.mask_paths = {i: masks[i] for i in chosen if i in masks}
            has_mask = self.mask_paths
        elif csv_path.is_file():
            try:
                rows = read_rle_rows(csv_path)
            except ValueError as err:
                raise DataError(str(err)) from None
            self.rles = {Path(name).stem: rle for _, name, rle in rows}
            self.rle_lines = {Path(name).stem: line for line, name, _ in rows}
            has_mask = self.rles
        else:
            raise DataNotFoundError(
                f"No masks for {self.image_dir}: neither {mask_dir} nor {csv_path} exists\n"
                f"{LAYOUT_HELP}"
            )
        missing = [i for i in chosen if i not in has_mask]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            message = (
                f"{len(missing)} of {len(chosen)} images in {self.image_dir} have no mask: {shown}"
            )
            if not skip_missing_masks:
                raise DataNotFoundError(
                    f"{message}\nAdd their masks, remove the images, or train without them with "
                    "data.on_bad_file=skip"
                )
            log.warning("%s; training without them (data.on_bad_file=skip)", message)
            chosen = [i for i in chosen if i in has_mask]
            if not chosen:
                raise DataNotFoundError(f"No image in {self.image_dir} has a mask")
        self.ids = chosen
        self.image_paths = {i: images[i] for i in chosen}

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: str, at_least: Sequence[int] | None = None) -> np.ndarray:
        """The image as ``uint8`` RGB ``(H, W, 3)`` (grey, RGBA, CMYK and palette images are
        converted), at its original size unless ``at_least`` is given.

        ``at_least`` (height, width): the size the caller will resize to. A JPEG is then decoded
        at the smallest of its 1/1, 1/2, 1/4 and 1/8 scales that is at least that big (libjpeg's
        DCT scaling, through Pillow's draft mode), which skips most of the decoding work.
        """
        return self._decode_image(image_id, at_least)[0]

    def _decode_image(
        self, image_id: str, at_least: Sequence[int] | None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """The image, and its original (height, width)."""
        path = self.image_paths[image_id]
        with _decoding(path), Image.open(path) as img:
            original = (img.height, img.width)
            if at_least is not None and img.format == "JPEG":
                img.draft("RGB", _draft_request(original, at_least))
            return np.asarray(img.convert("RGB")), original

    def read_pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask as arrays of the same size (reduced if ``decode_size`` allows it).

        Raises:
            DataError: the mask's size is not its image's.
        """
        image, original = self._decode_image(image_id, self.decode_size)
        mask = self.load_mask(image_id, original)
        if mask.shape != original:
            raise DataError(
                f"Mask of {image_id} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{original[1]}x{original[0]}: each mask must match its image's size"
            )
        if mask.shape != image.shape[:2]:  # the JPEG was decoded at a reduced scale
            mask = cv2.resize(
                mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST
            )
        return image, mask

    def load_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The mask as ``uint8`` ``(H, W)`` in {0, 1}; ``shape`` is needed for RLE masks.

        Kaggle's palette GIFs hold indices {0, 1}; other tools save {0, 255} or RGB: any non-zero
        value (of the palette index, or of the grey level) is car.
        """
        if image_id in self.mask_paths:
            path = self.mask_paths[image_id]
            with _decoding(path), Image.open(path) as m:
                values = np.asarray(m if m.mode in ("P", "L", "1") else m.convert("L"))
            return (values > 0).astype(np.uint8)
        if shape is None:
            with (
                _decoding(self.image_paths[image_id]),
                Image.open(self.image_paths[image_id]) as img,
            ):
                shape = (img.height, img.width)
        try:
            return rle_decode(self.rles[image_id], shape)
        except ValueError as err:
            line = self.rle_lines.get(image_id, "?")
            raise DataError(f"{self.root / 'train_masks.csv'}, line {line}: {err}") from None

    def problems(self) -> list[Problem]:
        """Everything wrong with this data set's files that their headers show (see
        ``carseg.validation``)."""
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


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Name the file when Pillow cannot decode it (mid-epoch, this message is all a user sees)."""
    try:
        yield
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"Cannot decode {path}: {type(err).__name__}: {err}") from None


class CarvanaDataModule(pl.LightningDataModule):
    """Train/validation loaders over a Carvana folder, split by car.

    Args:
        root: the data folder (Kaggle's layout).
        size: (height, width) the images are resized to; 320x480 is 1/4 of Carvana's 1280x1918.
        image_dir: ``"train"`` or ``"train_hq"``.
        val_fraction: share of the cars held out for validation.
        split_seed: seed of the split by car.
        batch_size: training batch size; validation uses the same.
        num_workers: loader worker processes (0 loads in the main process).
        pin_memory: page-locked batches, for a faster host-to-GPU copy; None: when CUDA is there.
        persistent_workers: keep workers between epochs (only with ``num_workers > 0``).
        augment: random flip, small affine and colour changes on the training split.
        jpeg_draft: decode JPEGs at the reduced scale (1/2, 1/4, 1/8) nearest above ``size``.
        cache: keep every image and mask resized to ``size`` in a memory-mapped file under
            ``cache_dir`` (built once, in about the time of one epoch; rebuilt when a source file
            changes), so that later epochs skip decoding.
        cache_dir: the folder caches are kept in (needed with ``cache``).
        validate: check every image and mask (headers, sizes, RLE rows) before training starts.
        on_bad_file: ``"error"`` stops before training with every problem listed; ``"skip"``
            trains without the images that have one (listed in a warning).
        synthetic: if given, parameters of ``carseg.synthetic.ensure_dataset`` (``n_cars``,
            ``height``, ``width``, ``seed``): the set is generated into ``root`` on first use
            (in ``prepare_data``, rank 0 only) and reused after.
    """

    def __init__(
        self,
        root: str | Path,
        size: Sequence[int] = (320, 480),
        image_dir: str = "train",
        val_fraction: float = 0.2,
        split_seed: int = 42,
        batch_size: int = 4,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        augment: bool = True,
        jpeg_draft: bool = True,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        validate: bool = True,
        on_bad_file: str = "error",
        synthetic: dict | None = None,
    ) -> None:
        super().__init__()
        # Saved into checkpoints (as plain values, for weights_only loading): evaluation and
        # prediction read the training size and normalisation from there.
        self.save_hyperparameters()
        self.hparams.update(
            root=str(root),
            size=[int(s) for s in size],
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"data.size must be [height, width], got {list(size)}")
        self.root = Path(root).expanduser()
        self.size = (int(size[0]), int(size[1]))
        self.image_dir = image_dir
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.augment = augment
        if on_bad_file not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.validate = validate
        self.on_bad_file = on_bad_file
        self.jpeg_draft = jpeg_draft
        if cache and cache_dir is None:
            raise ConfigError("data.cache=true needs data.cache_dir, the folder to keep it in")
        self.cache = cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.synthetic = dict(synthetic) if synthetic else None
        self.train_set: CarvanaDataset | None = None
        self.val_set: CarvanaDataset | None = None

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from carseg.synthetic import ensure_dataset

            try:
                ensure_dataset(self.root, **self.synthetic)
            except FileExistsError as err:
                raise DataError(f"{err} (data.root)") from None
            except ValueError as err:
                raise ConfigError(f"data.synthetic: {err}") from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        skip = self.on_bad_file == "skip"
        everything = CarvanaDataset(self.root, image_dir=self.image_dir, skip_missing_masks=skip)
        ids = everything.ids
        if self.validate:
            ids = self._usable(everything, skip)
        train_ids, val_ids = split_by_car(ids, self.val_fraction, self.split_seed)
        if not train_ids or not val_ids:
            cars = len({car_id(i) for i in ids})
            raise DataError(
                f"{self.root} holds {cars} car(s): a split by car needs at least 2 "
                "(one to train on, one to validate on)"
            )
        decode_size = self.size if self.jpeg_draft else None
        cache = None
        if self.cache:
            usable = CarvanaDataset(
                self.root, ids, image_dir=self.image_dir, decode_size=decode_size
            )
            cache = ResizedCache.build(usable, self.size, self.cache_dir)
        common = {
            "image_dir": self.image_dir,
            "skip_missing_masks": skip,
            "decode_size": decode_size,
            "cache": cache,
        }
        self.train_set = CarvanaDataset(
            self.root, train_ids, build_transforms(self.size, train=self.augment), **common
        )
        self.val_set = CarvanaDataset(
            self.root, val_ids, build_transforms(self.size, train=False), **common
        )
        log.info(
            "Carvana data %s: %d train / %d val images (%d / %d cars), resized to %dx%d",
            self.root,
            len(train_ids),
            len(val_ids),
            len({car_id(i) for i in train_ids}),
            len({car_id(i) for i in val_ids}),
            self.size[0],
            self.size[1],
        )

    @staticmethod
    def _usable(dataset: CarvanaDataset, skip: bool) -> list[str]:
        """The ids without problems; with problems and not ``skip``, stop listing them all."""
        started = time.perf_counter()
        problems = dataset.problems()
        log.info(
            "Checked %d images and masks in %.1f s: %d problem(s)",
            len(dataset),
            time.perf_counter() - started,
            len(problems),
        )
        if not problems:
            return dataset.ids
        message = describe(problems, len(dataset))
        if not skip:
            raise DataError(
                f"{message}\nFix or remove these files, or train without them with "
                "data.on_bad_file=skip"
            )
        log.warning("%s\nTraining without them (data.on_bad_file=skip)", message)
        bad = {p.image_id for p in problems}
        ids = [i for i in dataset.ids if i not in bad]
        if not ids:
            raise DataError(f"No usable image left in {dataset.image_dir}")
        return ids

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,  # every validation image counts; a short last train batch is fine
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
