"""The evaluation report: numbers, a histogram, Dice by view and by car, and the worst images.

Written by the first process once every process has scored its share
(``carseg.inference.evaluate``): ``metrics.json`` (mean, median, min, max, by view, by car, the
size's ceiling, every image's Dice), ``dice_per_image.csv``, ``dice_histogram.png``,
``dice_by_view.png`` (Carvana ids only) and ``worst_images.png``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Figure without pyplot: no global backend or figure state is touched (notebooks keep theirs).
from matplotlib.figure import Figure

from carseg.data.dataset import CarvanaDataset
from carseg.data.split import car_id, view_of
from carseg.utils import drawing
from carseg.utils.atomic import atomic_file, write_json

WORST_CARS = 10  # cars the view figure names


@dataclass(frozen=True)
class EvalReport:
    """Per-image Dice and where the report files are."""

    scores: dict[str, float]  # image id -> Dice at full resolution (NaN: both masks empty)
    mean: float
    median: float
    minimum: float
    ceiling: float | None  # mean Dice of the true masks taken down to the model's size and back
    by_view: dict[str, float]  # view ("01" .. "16") -> mean Dice; empty for other ids
    by_car: dict[str, float]  # car -> mean Dice
    files: dict[str, Path]


def summarise(scores: Mapping[str, float]) -> dict[str, float]:
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


def mean_by(scores: Mapping[str, float], key) -> dict[str, float]:
    """The mean Dice of the images grouped by ``key(image id)`` (None: left out), sorted by
    group."""
    groups: dict[str, list[float]] = {}
    for image_id, value in scores.items():
        group = key(image_id)
        if group is not None and not math.isnan(value):
            groups.setdefault(group, []).append(value)
    return {g: float(np.mean(v)) for g, v in sorted(groups.items())}


def write_report(
    out_dir: Path,
    scores: dict[str, float],
    ceilings: Mapping[str, float],
    worst: Mapping[str, np.ndarray],
    dataset: CarvanaDataset,
    threshold: float,
    car_id_pattern: str | None,
    extra: dict[str, Any] | None = None,
) -> EvalReport:
    """Write the report files into ``out_dir``.

    Args:
        out_dir: the run folder.
        scores: image id -> Dice.
        ceilings: image id -> the Dice of its true mask at the model's size (may be empty).
        worst: image id -> predicted mask ``(H, W)`` of the images the gallery shows.
        dataset: where the gallery reads the images and true masks.
        threshold: the threshold the masks were cut at.
        car_id_pattern: the rule that reads an id's car (None: Kaggle's).
        extra: more values for ``metrics.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(scores)
    by_view = mean_by(scores, view_of)
    views_cover = all(view_of(i) is not None for i in scores)
    by_car = mean_by(scores, lambda i: car_id(i, car_id_pattern))
    ceiling = summarise(ceilings)["mean"] if ceilings else None
    files = {
        "metrics": out_dir / "metrics.json",
        "csv": out_dir / "dice_per_image.csv",
        "histogram": out_dir / "dice_histogram.png",
        "gallery": out_dir / "worst_images.png",
    }
    if views_cover and by_view:
        files["views"] = out_dir / "dice_by_view.png"
    record = {
        **summary,
        "n_images": len(scores),
        "threshold": threshold,
        "size_ceiling": ceiling,
        **(extra or {}),
        "by_view": by_view if views_cover else {},
        "by_car": by_car,
        "per_image": {k: (None if math.isnan(v) else v) for k, v in sorted(scores.items())},
    }
    write_json(files["metrics"], record)
    with atomic_file(files["csv"]) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "dice", "size_ceiling"])
        for k, v in sorted(scores.items()):
            c = ceilings.get(k)
            writer.writerow(
                (k, "" if math.isnan(v) else f"{v:.6f}", "" if c is None else f"{c:.6f}")
            )
    _histogram(files["histogram"], scores, summary, ceiling)
    if "views" in files:
        _by_view(files["views"], by_view, by_car, summary["mean"])
    ranked = sorted((v, k) for k, v in scores.items() if k in worst)
    _gallery(files["gallery"], [k for _, k in ranked], scores, worst, dataset)
    return EvalReport(
        scores=scores,
        mean=summary["mean"],
        median=summary["median"],
        minimum=summary["min"],
        ceiling=ceiling,
        by_view=by_view if views_cover else {},
        by_car=by_car,
        files=files,
    )


def _save(fig: Figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")


def _histogram(
    path: Path, scores: Mapping[str, float], summary: Mapping[str, float], ceiling: float | None
) -> None:
    values = [v for v in scores.values() if not math.isnan(v)]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    ax.hist(values, bins=40, color="#4477aa")
    ax.axvline(summary["mean"], color="#cc3311", label=f"mean {summary['mean']:.4f}")
    ax.axvline(summary["median"], color="#228833", ls="--", label=f"median {summary['median']:.4f}")
    if ceiling is not None:
        ax.axvline(ceiling, color="#777777", ls=":", label=f"size's ceiling {ceiling:.4f}")
    ax.set_xlabel("Dice per image (full resolution)")
    ax.set_ylabel("images")
    ax.set_title(f"{len(values)} images")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _by_view(
    path: Path, by_view: Mapping[str, float], by_car: Mapping[str, float], mean: float
) -> None:
    """Bars of the mean Dice of each view, and of the worst cars."""
    fig = Figure(figsize=(11, 3.8), dpi=100)
    views_ax, cars_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    views = list(by_view)
    values = [by_view[v] for v in views]
    views_ax.bar(range(len(views)), values, color="#4477aa", tick_label=views)
    views_ax.axhline(mean, color="#cc3311", lw=1, label=f"mean {mean:.4f}")
    low = min(values)
    views_ax.set_ylim(max(0.0, low - (1 - low) * 0.5), 1.0)
    views_ax.set_xlabel("view (01 front, 05 side, 09 rear, 13 other side)")
    views_ax.set_ylabel("mean Dice")
    views_ax.set_title("Dice by view")
    views_ax.legend(loc="lower right", fontsize=8)
    worst = sorted(by_car.items(), key=lambda kv: kv[1])[:WORST_CARS]
    names = [c for c, _ in worst][::-1]
    cars_ax.barh(range(len(names)), [v for _, v in worst][::-1], color="#cc6677", tick_label=names)
    low = min(v for _, v in worst)
    cars_ax.set_xlim(max(0.0, low - (1 - low) * 0.5), 1.0)
    cars_ax.tick_params(axis="y", labelsize=7)
    cars_ax.set_xlabel("mean Dice")
    cars_ax.set_title(f"the {len(worst)} worst of {len(by_car)} cars")
    fig.tight_layout()
    _save(fig, path)


def _gallery(
    path: Path,
    ids: Sequence[str],
    scores: Mapping[str, float],
    worst: Mapping[str, np.ndarray],
    dataset: CarvanaDataset,
) -> None:
    rows = max(1, len(ids))
    fig = Figure(figsize=(12, 2.2 * rows + 0.5), dpi=100)
    axes = fig.subplots(rows, 4, squeeze=False)
    titles = ("image", "true mask", "predicted mask", "error map")
    for row, image_id in enumerate(ids):
        image = dataset.load_image(image_id)
        truth = dataset.load_mask(image_id, image.shape[:2])
        pred = worst[image_id]
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
    fig.suptitle(f"error map: {drawing.ERROR_LEGEND}", fontsize=8, y=0.995)
    fig.tight_layout()
    _save(fig, path)
