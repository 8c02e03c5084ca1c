"""Score a model at Kaggle's resolution and write what a person reads: numbers, a histogram, the
worst images.

Dice is computed per image at the image's original size (``carseg.inference.predictor`` upsamples the
probabilities before thresholding) and averaged once over all images, with the empty-mask rule of
``carseg.models.metrics``. The images scored are the cars the model did not train on: the validation
cars its checkpoint recorded (``images_to_score``).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Figure without pyplot: no global backend or figure state is touched (notebooks keep theirs).
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from carseg.utils import drawing
from carseg.utils.atomic import write_json
from carseg.utils.checks import check_choice
from carseg.data.dataset import CarvanaDataset
from carseg.utils.errors import ConfigError
from carseg.inference.predictor import Predictor, batched
from carseg.models.metrics import dice_per_image
from carseg.data.split import SplitRecord, car_id, cars_of

log = logging.getLogger(__name__)

SPLITS = ("val", "train", "all")


def images_to_score(
    image_ids: Sequence[str], split: str, record: SplitRecord | None, val_cars: Sequence[str]
) -> list[str]:
    """The image ids of ``split``: the checkpoint's validation cars (``val``), its training cars
    (``train``) or every image (``all``).

    Args:
        image_ids: every image of the data folder.
        split: ``"val"``, ``"train"`` or ``"all"``.
        record: the split the checkpoint recorded; None for checkpoints made before the record.
        val_cars: the validation cars of this config's own split, used only without a record.

    Raises:
        ConfigError: an unknown split, or a data folder that lacks the checkpoint's cars of it.
    """
    check_choice("split", split, SPLITS)
    if record is None:
        log.warning(
            "The checkpoint does not record its split by car (it predates the record): the "
            "validation cars are those of this config's split (data.val_fraction, "
            "data.split_seed). Make sure they are the training run's."
        )
        wanted_val = set(val_cars)
        trained = set(cars_of(image_ids)) - wanted_val
    else:
        wanted_val, trained = set(record.val_cars), set(record.train_cars)
    here = set(cars_of(image_ids))
    if split == "all":
        seen = sorted(here & trained)
        if seen:
            log.warning(
                "split=all scores %d car(s) the model trained on (%s): their Dice is not a "
                "validation score",
                len(seen),
                ", ".join(seen[:8]) + (" ..." if len(seen) > 8 else ""),
            )
        return list(image_ids)
    wanted = wanted_val if split == "val" else trained
    missing = sorted(wanted - here)
    if missing:
        where = f" (it was trained on {record.root})" if record is not None else ""
        raise ConfigError(
            f"The data folder lacks {len(missing)} of the checkpoint's {len(wanted)} {split} "
            f"car(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Point "
            f"data.root at the data the model was trained with{where}"
        )
    if split == "train":
        log.warning("split=train scores the cars the model trained on: not a validation score")
    return [i for i in image_ids if car_id(i) in wanted]


@dataclass(frozen=True)
class EvalReport:
    """Per-image Dice and where the report files are."""

    scores: dict[str, float]  # image id -> Dice at full resolution (NaN: both masks empty)
    mean: float
    median: float
    minimum: float
    files: dict[str, Path]


def score_images(
    dataset: CarvanaDataset,
    predictor: Predictor,
    threshold: float,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, float]:
    """Dice of every image of ``dataset`` (read at its original size, no transform)."""
    scores: dict[str, float] = {}
    batches = list(batched(dataset.ids, batch_size))
    for ids in tqdm(batches, desc="evaluating", unit="batch", disable=not progress):
        images = [dataset.load_image(i) for i in ids]
        probs = predictor.probabilities(images)
        for image_id, image, prob in zip(ids, images, probs, strict=True):
            truth = torch.from_numpy(dataset.load_mask(image_id, image.shape[:2]))
            pred = torch.from_numpy(prob > threshold)
            scores[image_id] = float(dice_per_image(pred[None], truth[None])[0])
    return scores


def summarise(scores: dict[str, float]) -> dict[str, float]:
    """Mean, median, min and max over the images with a defined Dice."""
    values = np.array([v for v in scores.values() if not math.isnan(v)], dtype=np.float64)
    if not len(values):
        nan = float("nan")
        return {"mean": nan, "median": nan, "min": nan, "max": nan, "n_scored": 0}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "n_scored": int(len(values)),
    }


def write_report(
    out_dir: Path,
    scores: dict[str, float],
    dataset: CarvanaDataset,
    predictor: Predictor,
    threshold: float,
    worst: int = 8,
    extra: dict | None = None,
) -> EvalReport:
    """Write ``metrics.json``, ``dice_per_image.csv``, ``dice_histogram.png`` and
    ``worst_images.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(scores)
    files = {
        "metrics": out_dir / "metrics.json",
        "csv": out_dir / "dice_per_image.csv",
        "histogram": out_dir / "dice_histogram.png",
        "gallery": out_dir / "worst_images.png",
    }
    record = {
        **summary,
        "n_images": len(scores),
        "threshold": threshold,
        **(extra or {}),
        "per_image": {k: (None if math.isnan(v) else v) for k, v in sorted(scores.items())},
    }
    write_json(files["metrics"], record)
    with files["csv"].open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "dice"])
        writer.writerows(
            (k, "" if math.isnan(v) else f"{v:.6f}") for k, v in sorted(scores.items())
        )
    _histogram(files["histogram"], scores, summary)
    ranked = sorted((v, k) for k, v in scores.items() if not math.isnan(v))
    _gallery(
        files["gallery"], [k for _, k in ranked[:worst]], scores, dataset, predictor, threshold
    )
    return EvalReport(
        scores=scores,
        mean=summary["mean"],
        median=summary["median"],
        minimum=summary["min"],
        files=files,
    )


def _histogram(path: Path, scores: dict[str, float], summary: dict[str, float]) -> None:
    values = [v for v in scores.values() if not math.isnan(v)]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    ax.hist(values, bins=40, color="#4477aa")
    ax.axvline(summary["mean"], color="#cc3311", label=f"mean {summary['mean']:.4f}")
    ax.axvline(summary["median"], color="#228833", ls="--", label=f"median {summary['median']:.4f}")
    ax.set_xlabel("Dice per image (full resolution)")
    ax.set_ylabel("images")
    ax.set_title(f"{len(values)} images")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def _gallery(
    path: Path,
    ids: Sequence[str],
    scores: dict[str, float],
    dataset: CarvanaDataset,
    predictor: Predictor,
    threshold: float,
) -> None:
    rows = max(1, len(ids))
    fig = Figure(figsize=(12, 2.2 * rows), dpi=100)
    axes = fig.subplots(rows, 4, squeeze=False)
    titles = ("image", "true mask", "predicted mask", drawing.ERROR_LEGEND)
    for row, image_id in enumerate(ids):
        image = dataset.load_image(image_id)
        truth = dataset.load_mask(image_id, image.shape[:2])
        pred = predictor.probabilities([image])[0] > threshold
        panels = (image, truth, pred, drawing.error_map(truth, pred))
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
        axes[row, 0].set_ylabel(f"{image_id}\nDice {scores[image_id]:.4f}", fontsize=8)
    if not ids:
        for ax in axes[0]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
