"""The LightningDataModule: a Carvana folder split by car into training and validation loaders.

Its arguments are ``conf/data/carvana.yaml``'s keys, where their defaults live; the split it made
is saved in every checkpoint (``state_dict``), so evaluation scores the cars the model never saw.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from carseg.data.cache import MaskStore, ResizedCache
from carseg.utils.checks import check_choice, check_int, check_size
from carseg.data.dataset import CarvanaDataset
from carseg.utils.errors import ConfigError, DataError
from carseg.data.split import SplitRecord, check_val_fraction, split_by_car
from carseg.data.transforms import build_transforms
from carseg.data.file_checks import describe

log = logging.getLogger(__name__)

ON_BAD_FILE = ("error", "skip")


def resolve_workers(num_workers: int | str, processes: int = 1) -> int:
    """Loader workers per process: ``"auto"`` is the CPU cores this process may use, shared by
    ``processes`` (DDP ranks on the machine), less one for the process itself.

    Raises:
        ConfigError: neither ``"auto"`` nor an integer >= 0.
    """
    if num_workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(0, (cores or 1) // max(1, processes) - 1)
    return check_int("data.num_workers", num_workers, 0, hint="or auto")


class CarvanaDataModule(pl.LightningDataModule):
    """Train/validation loaders over a Carvana folder, split by car.

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
        batch_size: training batch size.
        val_batch_size: validation batch size; None: ``batch_size`` (with crops, whole validation
            frames are larger than training crops: a smaller one may be needed).
        num_workers: loader worker processes (0 loads in the main process), or ``"auto"``.
        pin_memory: page-locked batches, for a faster host-to-GPU copy; None: when CUDA is there.
        persistent_workers: keep workers between epochs (only with ``num_workers > 0``).
        augment: random flip, small affine and colour changes on the training split.
        jpeg_draft: decode JPEGs at the reduced scale (1/2, 1/4, 1/8) nearest above ``size``.
        cache: keep every image and mask resized to ``size`` in a memory-mapped file under
            ``cache_dir`` (built once; rebuilt when a source file changes).
        cache_dir: the folder caches are kept in (needed with ``cache``).
        mask_cache: decode every mask once (in ``setup`` of the first run) into a store under
            ``cache_dir``, 1 bit a pixel, that every process maps, instead of decoding its file
            every epoch.
        validate: check every image and mask (headers, sizes, RLE rows) before training starts.
        on_bad_file: ``"error"`` stops before training with every problem listed; ``"skip"``
            trains without the images that have one (listed in a warning).
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
        batch_size: int,
        val_batch_size: int | None,
        num_workers: int | str,
        pin_memory: bool | None,
        persistent_workers: bool,
        augment: bool,
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
        if isinstance(crop_on_car, bool) or not 0.0 <= float(crop_on_car) <= 1.0:
            raise ConfigError(f"data.crop_on_car must be a share from 0 to 1, got {crop_on_car!r}")
        check_val_fraction(val_fraction)
        check_int("data.batch_size", batch_size, 1)
        if val_batch_size is not None:
            check_int("data.val_batch_size", val_batch_size, 1)
        check_int("data.split_seed", split_seed, 0)
        resolve_workers(num_workers)  # checked now, resolved per process in setup
        check_choice("data.on_bad_file", on_bad_file, ON_BAD_FILE)
        if (cache or mask_cache) and cache_dir is None:
            raise ConfigError(
                "data.cache=true and data.mask_cache=true need data.cache_dir, the folder to keep "
                "them in"
            )
        # Saved into checkpoints as plain values (weights_only loading): evaluation and
        # prediction read the training size from there.
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
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.crop_on_car = float(crop_on_car)
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.augment = augment
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
        if self.synthetic is not None:
            from carseg.data.synthetic import ensure_dataset

            try:
                ensure_dataset(self.root, **self.synthetic)
            except FileExistsError as err:
                raise DataError(f"{err} (data.root)") from None
            except (TypeError, ValueError) as err:
                raise ConfigError(f"data.synthetic: {err}") from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        skip = self.on_bad_file == "skip"
        everything = CarvanaDataset(self.root, image_dir=self.image_dir, skip_missing_masks=skip)
        ids = self._usable(everything, skip) if self.validate else everything.ids
        train_ids, val_ids = split_by_car(ids, self.val_fraction, self.split_seed)
        self.split = SplitRecord.of(
            str(self.root.resolve()), self.val_fraction, self.split_seed, train_ids, val_ids
        )
        self._check_resumed_split()
        decode_size = self.size if self.jpeg_draft else None
        usable = CarvanaDataset(self.root, ids, image_dir=self.image_dir, decode_size=decode_size)
        cache = masks = None
        if self.cache:
            cache = ResizedCache.build(usable, self.size, self.cache_dir)
        elif self.mask_cache:
            threads = resolve_workers("auto") + 1  # every core this process may use
            masks = MaskStore.build(usable, self.cache_dir, threads)
        common = {
            "image_dir": self.image_dir,
            "skip_missing_masks": skip,
            "decode_size": decode_size,
            "cache": cache,
            "masks": masks,
        }
        self.train_set = CarvanaDataset(
            self.root,
            train_ids,
            build_transforms(self.size, self.augment, self.crop, self.crop_on_car),
            **common,
        )
        self.val_set = CarvanaDataset(self.root, val_ids, build_transforms(self.size), **common)
        log.info(
            "Carvana data %s: %d train / %d val images (%d / %d cars), resized to %dx%d",
            self.root,
            len(train_ids),
            len(val_ids),
            len(self.split.train_cars),
            len(self.split.val_cars),
            *self.size,
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

    # The split travels with every checkpoint (Lightning stores this under the class's name).
    def state_dict(self) -> dict[str, Any]:
        return {"split": self.split.to_dict()} if self.split is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume (Lightning calls this before ``setup``): keep the checkpoint's split, which
        ``setup`` compares with the one it makes."""
        if "split" in state_dict:
            self._resumed_split = SplitRecord.from_dict(state_dict["split"])
            if self.split is not None:
                self._check_resumed_split()

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
        workers = resolve_workers(self.num_workers, processes)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=False,  # every validation image counts; a short last train batch is fine
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, batch_size=self.val_batch_size)
