"""The LightningDataModule: a Carvana folder split by car into training and validation loaders,
and the set evaluation scores at full resolution.

Its arguments are ``conf/data/carvana.yaml``'s keys, where their defaults live; training and
evaluation both build it, so every key is checked one way. The training size and the split it
made (``size``, ``split``) go into every checkpoint's carseg record
(``carseg.training.callbacks.record``), so evaluation scores the cars the model never saw.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from carseg.data.cache import MaskStore, ResizedCache
from carseg.data.dataset import CarvanaDataset
from carseg.data.file_checks import usable_ids
from carseg.data.split import SplitRecord, car_pattern, check_val_fraction, split_by_car
from carseg.data.transforms import inference_transforms, training_transforms
from carseg.utils.checks import (
    check_apart,
    check_bool,
    check_choice,
    check_int,
    check_share,
    check_size,
)
from carseg.utils.errors import ConfigError, DataError
from carseg.utils.processes import loader_workers, usable_cores

log = logging.getLogger(__name__)

ON_BAD_FILE = ("error", "skip")
# The keys evaluation reads (the folder, its checks, and the split it falls back on when a model
# records none): ``listing``, ``split_ids``, ``scoring_set``. The others shape training's loaders.
SCORING_KEYS = (
    "root",
    "synthetic",
    "image_dir",
    "car_id_pattern",
    "val_fraction",
    "split_seed",
    "folds",
    "fold",
    "validate",
    "on_bad_file",
)


def prepare_root(root: str | Path, synthetic: Mapping[str, Any] | None) -> Path:
    """The data folder; with ``synthetic`` (``carseg.data.synthetic.ensure_dataset``'s
    parameters) the generated set, made on first use and reused after.

    Raises:
        DataError: ``root`` holds something that is not the generated set.
        ConfigError: bad generation parameters.
    """
    root = Path(root).expanduser()
    if synthetic:
        from carseg.data.synthetic import ensure_dataset

        try:
            ensure_dataset(root, **synthetic)
        except FileExistsError as err:
            raise DataError(f"{err} (data.root)") from None
        except (TypeError, ValueError) as err:
            raise ConfigError(f"data.synthetic: {err}") from None
    return root


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """A loader worker's start: Lightning's seeding of torch, numpy and ``random`` for this
    worker and process, then the training transform's own generator (albumentations' ``Compose``
    keeps one, which no global seed reaches) from the same seed, so the same seed gives the same
    augmentations in every run.

    A worker ignores SIGTERM and Ctrl-C (SIGINT), which a scheduler or a terminal sends to every
    process of the job: the training process decides, stops after its batch and saves
    (``carseg.training.callbacks.stop``), with its workers still there to validate."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    pl_worker_init_function(worker_id, rank)
    info = torch.utils.data.get_worker_info()
    seed_transform(getattr(info.dataset, "transform", None), info.seed, rank)


def seed_transform(transform: object, seed: int, rank: int) -> None:
    """Seed an albumentations pipeline's generator from ``seed`` and the process's ``rank``."""
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))


class CarvanaDataModule(pl.LightningDataModule):
    """Train/validation loaders over a Carvana folder, split by car; for evaluation, the images
    of that folder at their own size (``listing``, ``scoring_set``).

    Args:
        root: the data folder (Kaggle's layout).
        size: (height, width) the images are resized to; 320x480 is 1/4 of Carvana's 1280x1918,
            and 1280x1918 itself is no resize. Validation scores whole frames at this size.
        crop: (height, width) of a random crop of each resized training image, or None: the
            model trains on crops and validates on whole frames.
        crop_on_car: the share of training crops that hold car (the rest fall anywhere).
        image_dir: ``"train"`` or ``"train_hq"``.
        val_fraction: share of the cars held out for validation, in (0, 1).
        split_seed: seed of the split by car.
        folds: deal the cars into this many folds (by ``split_seed``) and validate on fold
            ``fold``; None: hold out ``val_fraction`` of the cars.
        fold: the fold validated, 0 to ``folds - 1``; None without ``folds`` (a fold given
            without them is refused: it would be ignored, every fold job splitting alike).
        car_id_pattern: the rule that reads an image id's car (``carseg.data.split.car_id``: a
            regular expression with a group ``car``); None: Kaggle's ``<car>_<view>``.
        batch_size: training batch size.
        val_batch_size: validation batch size; None: ``batch_size`` (with crops, whole validation
            frames are larger than training crops: a smaller one may be needed).
        num_workers: loader worker processes (0 loads in the main process), or ``"auto"``.
        pin_memory: page-locked batches, for a faster host-to-GPU copy; None: when CUDA is there.
        persistent_workers: keep workers between epochs (only with ``num_workers > 0``).
        augment: augment the training split with ``augmentation``.
        augmentation: the augmentations' probabilities and ranges
            (``carseg.data.transforms.augmentations``).
        jpeg_draft: decode JPEGs at the reduced scale (1/2, 1/4, 1/8) nearest above ``size``.
        cache: keep every image and mask resized to ``size`` in a memory-mapped file under
            ``cache_dir`` (built once; rebuilt when a source file changes).
        cache_dir: the folder caches are kept in (needed with ``cache``).
        mask_cache: decode every mask once (in ``setup`` of the first run) into a store under
            ``cache_dir``, 1 bit a pixel, that every process maps, instead of decoding its file
            every epoch.
        validate: check every image and mask (headers, sizes, RLE rows) before training or
            scoring starts.
        on_bad_file: ``"error"`` stops before training or scoring with every problem listed;
            ``"skip"`` goes on without the images that have one (listed in a warning).
        synthetic: if given, parameters of ``carseg.data.synthetic.ensure_dataset`` (``n_cars``,
            ``height``, ``width``, ``seed``): the set is generated into ``root`` on first use
            (in ``prepare_data``, rank 0 only) and reused after.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        size: list[int],
        crop: list[int] | None,
        crop_on_car: float,
        image_dir: str,
        val_fraction: float,
        split_seed: int,
        car_id_pattern: str | None,
        folds: int | None,
        fold: int | None,
        batch_size: int,
        val_batch_size: int | None,
        num_workers: int | str,
        pin_memory: bool | None,
        persistent_workers: bool,
        augment: bool,
        augmentation: Mapping[str, Any],
        jpeg_draft: bool,
        cache: bool,
        cache_dir: str | Path | None,
        mask_cache: bool,
        validate: bool,
        on_bad_file: str,
        synthetic: dict | None,
    ) -> None:
        super().__init__()
        self.size = check_size("data.size", size)
        self.crop = None if crop is None else check_size("data.crop", crop)
        if self.crop is not None and (self.crop[0] > self.size[0] or self.crop[1] > self.size[1]):
            raise ConfigError(
                f"data.crop={list(self.crop)} does not fit in the resized frame data.size="
                f"{list(self.size)}: a crop must lie inside the image"
            )
        check_share("data.crop_on_car", crop_on_car)
        for key, value in (("augment", augment), ("jpeg_draft", jpeg_draft), ("cache", cache),
                           ("mask_cache", mask_cache), ("validate", validate),
                           ("persistent_workers", persistent_workers)):  # fmt: skip
            check_bool(f"data.{key}", value)
        if pin_memory is not None:
            check_bool("data.pin_memory", pin_memory)
        if not isinstance(image_dir, str) or not image_dir or "/" in image_dir:
            raise ConfigError(
                f"data.image_dir must be a folder name (train, train_hq), got {image_dir!r}"
            )
        check_val_fraction(val_fraction)
        car_pattern(car_id_pattern)  # a rule that compiles
        if folds is None and fold is not None:
            raise ConfigError(
                f"data.fold={fold} without data.folds: the fold would be ignored (every job "
                "would hold out data.val_fraction of the cars alike). Give the number of folds "
                "too: data.folds=5 data.fold=0,1,2,3,4"
            )
        if folds is not None:
            check_int("data.folds", folds, 2, hint="or null for data.val_fraction")
            check_int("data.fold", fold, 0, hint="the fold validated, from 0 to data.folds - 1")
            if fold >= folds:
                raise ConfigError(f"data.fold={fold}: the folds are numbered 0 to {folds - 1}")
        check_int("data.batch_size", batch_size, 1)
        if val_batch_size is not None:
            check_int("data.val_batch_size", val_batch_size, 1)
        check_int("data.split_seed", split_seed, 0)
        loader_workers(num_workers, key="data.num_workers")  # checked now, resolved per process
        check_choice("data.on_bad_file", on_bad_file, ON_BAD_FILE)
        if (cache or mask_cache) and cache_dir is None:
            raise ConfigError(
                "data.cache=true and data.mask_cache=true need data.cache_dir, the folder to keep "
                "them in"
            )
        if cache_dir is not None:
            for folder in (image_dir, "train_masks"):
                check_apart(Path(root) / folder, "data.root", Path(cache_dir), "data.cache_dir")
        # Plain values (weights_only loading) for TensorBoard's HPARAMS and the checkpoint.
        self.save_hyperparameters()
        self.hparams.update(
            root=str(root),
            size=list(self.size),
            crop=None if self.crop is None else list(self.crop),
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
        self.root = Path(root).expanduser()
        self.image_dir = image_dir
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.car_id_pattern = car_id_pattern
        self.fold_of = None if folds is None else (fold, folds)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.crop_on_car = float(crop_on_car)
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.augmentation = dict(augmentation) if augment else None
        self.validate = validate
        self.on_bad_file = on_bad_file
        self.jpeg_draft = jpeg_draft
        self.cache = cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.mask_cache = mask_cache
        self.synthetic = dict(synthetic) if synthetic else None
        self.train_set: CarvanaDataset | None = None
        self.val_set: CarvanaDataset | None = None
        self.split: SplitRecord | None = None
        self._resumed_split: SplitRecord | None = None  # the split of a checkpoint resumed from

    def prepare_data(self) -> None:
        prepare_root(self.root, self.synthetic)

    def listing(self) -> CarvanaDataset:
        """Every image of the folder (``image_dir``) with its mask, at full resolution and
        untransformed; images without a mask stop it, or are left out with ``on_bad_file=skip``.

        Raises:
            DataNotFoundError, DataError: no such folder, no images, or masks missing.
        """
        skip = self.on_bad_file == "skip"
        return CarvanaDataset(self.root, image_dir=self.image_dir, skip_missing_masks=skip)

    def split_ids(self, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """The training and validation ids of ``ids`` by this config's split by car
        (``val_fraction`` or ``folds``, ``split_seed``, ``car_id_pattern``)."""
        return split_by_car(
            ids, self.val_fraction, self.split_seed, self.car_id_pattern, self.fold_of
        )

    def scoring_set(self, listed: CarvanaDataset, ids: Sequence[str]) -> CarvanaDataset:
        """The images ``ids`` of ``listed`` (``listing``) as evaluation scores them: at their
        own size, untransformed, their files checked like training's (``validate``,
        ``on_bad_file``).

        Raises:
            DataError: a bad file and ``on_bad_file=error``, or no usable image left.
        """
        return listed.subset(self._usable(listed.subset(ids)))

    def _usable(self, listed: CarvanaDataset) -> list[str]:
        """The ids of ``listed`` whose files pass the checks (with ``validate``), bad ones
        refused or left out by ``on_bad_file``."""
        if not self.validate:
            return listed.ids
        return usable_ids(listed, self.on_bad_file == "skip", "data.on_bad_file=skip")

    def expect_split(self, split: SplitRecord | None) -> None:
        """The split of the checkpoint this run resumes: ``setup`` refuses to make another."""
        self._resumed_split = split
        if self.split is not None:
            self._check_resumed_split()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        listed = self.listing()
        ids = self._usable(listed)
        train_ids, val_ids = self.split_ids(ids)
        self.split = SplitRecord.of(
            str(self.root.resolve()),
            self.val_fraction,
            self.split_seed,
            train_ids,
            val_ids,
            self.car_id_pattern,
            self.fold_of,
        )
        self._check_resumed_split()
        decode_size = self.size if self.jpeg_draft else None
        usable = listed.subset(ids, decode_size=decode_size)
        cache = masks = None
        if self.cache:
            cache = ResizedCache.build(usable, self.size, self.cache_dir, threads=usable_cores())
        elif self.mask_cache:
            masks = MaskStore.build(usable, self.cache_dir, threads=usable_cores())
        resize = cache is None  # the cache holds the images at size already
        train_transform = training_transforms(
            self.size,
            resize=resize,
            augmentation=self.augmentation,
            crop=self.crop,
            crop_on_car=self.crop_on_car,
        )
        sources = {"decode_size": decode_size, "cache": cache, "masks": masks}
        self.train_set = usable.subset(train_ids, train_transform, **sources)
        val_transform = inference_transforms(self.size, resize=resize)
        self.val_set = usable.subset(val_ids, val_transform, **sources)
        log.info(
            "Carvana data %s: %d train / %d val images (%d / %d cars), resized to %dx%d",
            self.root,
            len(train_ids),
            len(val_ids),
            len(self.split.train_cars),
            len(self.split.val_cars),
            *self.size,
        )

    def _check_resumed_split(self) -> None:
        """Refuse a split that is not the checkpoint's: cars would cross from train to val."""
        saved = self._resumed_split
        if saved is None or set(saved.val_cars) == set(self.split.val_cars):
            return
        moved = sorted(set(saved.val_cars) ^ set(self.split.val_cars))
        raise ConfigError(
            f"The checkpoint was trained with another split by car (data.split_seed="
            f"{saved.split_seed}, data.val_fraction={saved.val_fraction}, root {saved.root}); "
            f"this run's would move {len(moved)} car(s) across the split "
            f"({', '.join(moved[:5])}), so validation would score cars it trained on. Resume "
            "with the run's data settings"
        )

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        processes = self.trainer.num_devices if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        workers = loader_workers(self.num_workers, processes, key="data.num_workers")
        if workers == 0:  # the transforms run here: seeded from this process's torch seed
            seed_transform(getattr(dataset, "transform", None), torch.initial_seed(), rank)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=False,  # every validation image counts; a short last train batch is fine
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=functools.partial(seed_worker, rank=rank) if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, batch_size=self.val_batch_size)
