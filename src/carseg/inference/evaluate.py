"""Score trained models at Kaggle's resolution on the cars they did not train on: the library
behind ``src/eval.py``.

Scoring runs through the predict loop, like prediction (``carseg.inference.loop``): any number of
processes or devices, a checkpoint, an ONNX model or an ensemble. The images come from the data
module training builds (``carseg.data.datamodule``), its keys checked one way. Dice is computed
per image at the image's original size (the probabilities are upsampled before thresholding) and
averaged once over all images, with the empty-mask rule of ``carseg.models.metrics``. Each
process writes its scores as rows and keeps its worst predictions; the first merges them into
the report (``carseg.inference.report``), whose gallery shows the masks already predicted.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import BasePredictionWriter

from carseg.data.datamodule import SCORING_KEYS, CarvanaDataModule
from carseg.data.image_io import read_mask, save_mask
from carseg.data.split import SplitRecord, car_id, cars_of, check_car_ids
from carseg.inference.loop import (
    InferenceModule,
    ScoringSet,
    build_predictor,
    inference_trainer,
    inference_trainer_config,
    postprocess_of,
    run_loop,
)
from carseg.inference.report import EvalReport, write_report
from carseg.inference.rows import append_row, read_rows
from carseg.utils.checks import check_apart, check_bool, check_choice, check_int
from carseg.utils.errors import ConfigError, DataError, TerminatedError

log = logging.getLogger(__name__)

SPLITS = ("val", "train", "all")
SCORES = "scores-rank*.csv"  # each process's image,dice,ceiling rows


def images_to_score(
    image_ids: Sequence[str],
    split: str,
    records: Sequence[SplitRecord | None],
    val_cars: Sequence[str],
    pattern: str | None = None,
) -> list[str]:
    """The image ids of ``split``: the cars no model trained on (``val``), the cars the models
    trained on (``train``) or every image (``all``).

    Args:
        image_ids: every image of the data folder.
        split: ``"val"``, ``"train"`` or ``"all"``.
        records: the split each model's file recorded (one for a single model; None for a
            model that records none: one trained without a data module).
        val_cars: the validation cars of this config's own split, used only without a record.
        pattern: the rule that reads an id's car (``carseg.data.split.car_id``).

    Raises:
        ConfigError: an unknown split, a data folder that lacks the checkpoints' cars of it, or
            an ensemble whose models together trained on every car.
    """
    check_choice("split", split, SPLITS)
    check_car_ids(image_ids, pattern)
    here = set(cars_of(image_ids, pattern))
    if any(r is None for r in records):
        log.warning(
            "A model does not record its split by car (it was saved without a data module): "
            "the validation cars are those of this config's split (data.val_fraction, "
            "data.split_seed, data.folds). Make sure they are the training run's."
        )
    held_out = [set(val_cars) if r is None else set(r.val_cars) for r in records]
    trained = set().union(
        *((here - set(val_cars)) if r is None else set(r.train_cars) for r in records)
    )
    wanted_val = set.intersection(*held_out) - trained
    if split == "all":
        seen = sorted(here & trained)
        if seen:
            log.warning(
                "split=all scores %d car(s) a model trained on (%s): their Dice is not a "
                "validation score",
                len(seen),
                ", ".join(seen[:8]) + (" ..." if len(seen) > 8 else ""),
            )
        return list(image_ids)
    if split == "val" and not wanted_val:
        raise ConfigError(
            f"The {len(records)} models were trained on different cars (folds?): no car is held "
            "out by all of them. Score them on other cars: data.root=<a folder of other cars> "
            "split=all"
        )
    wanted = wanted_val if split == "val" else trained
    missing = sorted(wanted - here)
    if missing:
        roots = sorted({r.root for r in records if r is not None})
        where = f" (it was trained on {', '.join(roots)})" if roots else ""
        raise ConfigError(
            f"The data folder lacks {len(missing)} of the checkpoint's {len(wanted)} {split} "
            f"car(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Point "
            f"data.root at the data the model was trained with{where}"
        )
    if split == "train":
        log.warning("split=train scores the cars the model trained on: not a validation score")
    return [i for i in image_ids if car_id(i, pattern) in wanted]


class ScoreWriter(BasePredictionWriter):
    """Each process's scores as rows (``scores-rank<r>.csv``) and its ``worst`` lowest-Dice
    predicted masks (``.worst-rank<r>/``), for the first process to merge into the report."""

    def __init__(self, folder: Path, worst: int) -> None:
        super().__init__(write_interval="batch")
        self.folder = folder
        self.worst = worst
        # the lowest-Dice predictions so far, a heap of (-dice, n, id, mask): the highest on top
        self._kept: list[tuple[float, int, str, Any]] = []
        self._order = itertools.count()

    def rows(self, rank: int) -> Path:
        return self.folder / SCORES.replace("*", str(rank))

    def worst_dir(self, rank: int) -> Path:
        return self.folder / f".worst-rank{rank}"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows(trainer.global_rank).unlink(missing_ok=True)
        shutil.rmtree(self.worst_dir(trainer.global_rank), ignore_errors=True)
        self._kept = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        path = self.rows(trainer.global_rank)
        for name, dice, ceiling, mask in zip(
            prediction["names"],
            prediction["dice"],
            prediction["ceiling"],
            prediction["masks"],
            strict=True,
        ):
            append_row(path, [name, repr(dice), "" if ceiling is None else repr(ceiling)])
            if self.worst and not math.isnan(dice):
                entry = (-dice, next(self._order), name, mask)
                if len(self._kept) < self.worst:
                    heapq.heappush(self._kept, entry)
                elif -dice > self._kept[0][0]:  # lower than the highest kept
                    heapq.heapreplace(self._kept, entry)
        for name, reason in prediction["failed"]:
            raise DataError(f"Cannot read {name}: {reason}")
        if trainer.received_sigterm:
            raise TerminatedError("Stopped by SIGTERM: the evaluation is incomplete, not reported")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = self.worst_dir(trainer.global_rank)
        folder.mkdir(exist_ok=True)
        for n, (_, _, name, mask) in enumerate(self._kept):
            save_mask(mask, folder / f"{n}.png", format="PNG")
            append_row(folder / "index.csv", [name, f"{n}.png"])
        trainer.strategy.barrier("carseg-scores")  # every process has written its rows

    def collect(self) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
        """Every process's scores, ceilings, and the predicted masks of the ``worst`` images;
        the intermediate files are removed."""
        files = sorted(self.folder.glob(SCORES))
        scores, ceilings = {}, {}
        for name, dice, ceiling in read_rows(files, width=3):
            scores[name] = float(dice)
            if ceiling:
                ceilings[name] = float(ceiling)
        kept: dict[str, Path] = {}
        folders = sorted(self.folder.glob(".worst-rank*"))
        for folder in folders:
            index = folder / "index.csv"
            for name, file in read_rows([index], width=2) if index.is_file() else []:
                kept[name] = folder / file
        ranked = sorted((v, k) for k, v in scores.items() if k in kept)
        worst = {k: read_mask(kept[k]) for _, k in ranked[: self.worst]}
        for path in files:
            path.unlink()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        return scores, ceilings, worst


def scoring_data(data: DictConfig) -> CarvanaDataModule:
    """The data module of ``data`` (the ``data`` group), built as training builds it, so every
    key is checked as training checks it.

    Raises:
        ConfigError: a bad ``data`` key, or a ``data._target_`` that is not a CarvanaDataModule.
    """
    module = instantiate(data, _convert_="all")
    if not isinstance(module, CarvanaDataModule):
        raise ConfigError(
            f"data._target_={data.get('_target_')} builds a {type(module).__name__}: eval.py "
            "scores the images of a CarvanaDataModule (data=carvana or data=synthetic)"
        )
    return module


# data keys only training reads, and the key of eval.py's that does that job
INSTEAD = {
    "size": "size=[height,width] (null: each model's recorded training size)",
    "batch_size": "batch_size=<images per batch>",
    "val_batch_size": "batch_size=<images per batch>",
    "num_workers": "num_workers=<loader processes>",
}


def refuse_training_keys(overrides: Sequence[str]) -> None:
    """Refuse a command-line override of a ``data`` key that only training reads: eval.py
    would do nothing with it (``CarvanaDataModule``'s ``SCORING_KEYS`` are what it reads).

    Raises:
        ConfigError: ``data.size=[64,96]`` and the like, naming eval.py's own key if it has one.
    """
    for override in overrides:
        key, sep, _ = override.lstrip("+~").partition("=")
        group, _, name = key.partition(".")
        name = name.split(".")[0]
        if group != "data" or not name or name in SCORING_KEYS or name == "_target_":
            continue
        read = ", ".join(f"data.{k}" for k in SCORING_KEYS)
        instead = f"; eval.py's own key is {INSTEAD[name]}" if name in INSTEAD else ""
        raise ConfigError(
            f"{override}: data.{name} is a training setting and eval.py does nothing with it"
            f"{instead}. Of the data group, eval.py reads {read}"
        )


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> EvalReport | None:
    """Score the models of ``cfg`` (the composed ``conf/eval.yaml``) and write the report into
    its run folder; None on every process but the first.

    The images come from the data module ``cfg.data`` builds, as in training
    (``CarvanaDataModule.listing`` and ``scoring_set``): every ``data`` key is checked as
    training checks it.

    Args:
        cfg: the composed ``conf/eval.yaml``.
        overrides: the command line's overrides (Hydra's ``overrides.task``): a ``data`` key
            that only training reads is refused (``refuse_training_keys``).

    Raises:
        ConfigError, DataError, DataNotFoundError: a bad option, model or data folder.
    """
    refuse_training_keys(overrides)
    check_choice("split", cfg.split, SPLITS)
    worst = check_int("worst", cfg.worst, 0)
    check_bool("ceiling", cfg.ceiling)
    postprocess = postprocess_of(cfg)
    trainer_cfg = inference_trainer_config(cfg)
    predictor, threshold, models = build_predictor(cfg)
    data = scoring_data(cfg.data)
    check_apart(data.root, "data.root", cfg.paths.output_dir, "hydra.run.dir")
    data.prepare_data()
    listed = data.listing()
    records = [m.split for m in models]
    # the rule given (data.car_id_pattern: this data folder's, say), else the one the training
    # runs read cars by
    recorded = [r.car_id_pattern for r in records if r is not None]
    pattern = data.car_id_pattern
    if pattern is None and recorded:
        pattern = recorded[0]
    elif recorded and recorded[0] != pattern:
        log.warning(
            "data.car_id_pattern=%r reads the cars, not the checkpoint's rule (%r): the "
            "checkpoint's car names must follow it",
            pattern,
            recorded[0],
        )
    own_val: list[str] = []
    if any(r is None for r in records):
        own_val = data.split_ids(listed.ids)[1]
    ids = images_to_score(listed.ids, cfg.split, records, cars_of(own_val, pattern), pattern)
    dataset = data.scoring_set(listed, ids)
    ids = dataset.ids
    folder = Path(cfg.paths.output_dir)
    writer = ScoreWriter(folder, worst)
    trainer = inference_trainer(trainer_cfg, writer, models)
    largest = max(predictor.sizes, key=lambda s: s[0] * s[1])
    scoring = ScoringSet(dataset, predictor, largest if cfg.ceiling else None, threshold)
    module = InferenceModule(predictor, threshold, postprocess)
    run_loop(trainer, module, scoring, cfg.batch_size,
             cfg.num_workers)  # fmt: skip
    if not trainer.is_global_zero:
        return None
    scores, ceilings, worst_masks = writer.collect()
    return write_report(
        folder,
        scores,
        ceilings,
        worst_masks,
        dataset,
        threshold,
        pattern,
        extra={
            "checkpoint": [str(m.path) for m in models] if len(models) > 1 else str(models[0].path),
            "data_root": str(data.root),
            "split": cfg.split,
            "cars": cars_of(ids, pattern),
            "tta": cfg.tta,
            "refine": predictor.refine.record(),
            "model_input_size": [list(s) for s in predictor.sizes]
            if len(models) > 1
            else list(predictor.sizes[0]),
            "ceiling_size": list(largest) if cfg.ceiling else None,
        },
    )
