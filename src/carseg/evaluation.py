"""Score a model at Kaggle's resolution and write what a person reads: numbers, a histogram, the
worst images.

Dice is computed per image at the image's original size (``carseg.inference`` upsamples the
probabilities before thresholding) and averaged once over all images, with the empty-mask rule of
``carseg.metrics``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Figure without pyplot: no global backend or figure state is touched (notebooks keep theirs).
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from carseg.data import CarvanaDataset
from carseg.inference import Predictor, batched
from carseg.metrics import dice_per_image


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
    files["metrics"].write_text(json.dumps(record, indent=2) + "\n")
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


def error_overlay(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB uint8 map: true positives grey, false positives red, false negatives blue."""
    out = np.zeros((*truth.shape, 3), dtype=np.uint8)
    truth, pred = truth.astype(bool), pred.astype(bool)
    out[truth & pred] = (170, 170, 170)
    out[~truth & pred] = (230, 40, 40)
    out[truth & ~pred] = (40, 90, 230)
    return out


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
    titles = ("image", "true mask", "predicted mask", "errors: red FP, blue FN")
    for row, image_id in enumerate(ids):
        image = dataset.load_image(image_id)
        truth = dataset.load_mask(image_id, image.shape[:2])
        pred = predictor.probabilities([image])[0] > threshold
        panels = (image, truth, pred, error_overlay(truth, pred))
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
