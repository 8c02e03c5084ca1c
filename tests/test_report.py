"""carseg.inference.report: the evaluation's numbers, by view and by car, and its pictures."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from carseg.data.dataset import CarvanaDataset
from carseg.inference.report import mean_by, summarise, view_of, write_report
from carseg.utils import drawing

# the figures' colours (carseg.inference.report): bars of views and of cars, the mean's line
VIEW_BAR, CAR_BAR, MEAN_LINE = (0x44, 0x77, 0xAA), (0xCC, 0x66, 0x77), (0xCC, 0x33, 0x11)


def pixels(path) -> np.ndarray:
    """A PNG as uint8 RGB ``(H, W, 3)``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def where(image: np.ndarray, colour) -> np.ndarray:
    """``(H, W)``: the pixels of exactly ``colour``."""
    return np.all(image == np.array(colour, dtype=np.uint8), axis=-1)


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-D array: the bars met along a line."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_summary_leaves_out_images_whose_masks_are_both_empty():
    summary = summarise({"a": 1.0, "b": 0.5, "c": float("nan"), "d": 0.9})
    assert summary == pytest.approx(
        {"mean": 0.8, "median": 0.9, "min": 0.5, "max": 1.0, "n_scored": 3}
    )
    empty = summarise({"a": float("nan")})
    assert empty["n_scored"] == 0 and math.isnan(empty["mean"])


def test_views_and_cars_are_read_from_kaggles_ids():
    assert view_of("00087a6bd4dc_01") == "01" and view_of("car_with_underscores_16") == "16"
    assert view_of("photo") is None and view_of("car-01") is None
    scores = {"a_01": 0.9, "a_02": 0.7, "b_01": 0.5, "b_02": float("nan")}
    assert mean_by(scores, view_of) == pytest.approx({"01": 0.7, "02": 0.7})


def test_the_report_files_hold_the_scores(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:20])  # two cars' worth of views: 16 and 4
    rng = np.random.default_rng(0)
    scores = {i: float(rng.uniform(0.8, 1.0)) for i in dataset.ids}
    ceilings = {i: 0.99 for i in dataset.ids}
    worst_id = min(scores, key=scores.get)
    worst = {worst_id: dataset.load_mask(worst_id)}
    report = write_report(tmp_path, scores, ceilings, worst, dataset, 0.5, None, extra={"x": 1})
    metrics = json.loads(report.files["metrics"].read_text())
    assert metrics["mean"] == pytest.approx(np.mean(list(scores.values())))
    assert metrics["n_images"] == 20 and metrics["x"] == 1 and metrics["threshold"] == 0.5
    assert metrics["size_ceiling"] == pytest.approx(0.99) and report.ceiling == pytest.approx(0.99)
    assert metrics["per_image"] == pytest.approx(scores)
    view_01 = [v for k, v in scores.items() if k.endswith("_01")]
    assert metrics["by_view"]["01"] == pytest.approx(np.mean(view_01))
    assert len(metrics["by_car"]) == 2
    with report.files["csv"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "dice", "size_ceiling"] and len(rows) == 21
    assert {r[0]: float(r[1]) for r in rows[1:]} == pytest.approx(scores, abs=1e-6)


def test_ids_not_in_kaggles_form_have_no_view_figure(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:2])
    scores = {"photo": 0.9, "other": 0.8}
    report = write_report(tmp_path, scores, {}, {}, dataset, 0.5, None)
    assert "views" not in report.files and report.by_view == {} and report.ceiling is None


def view_scores(dataset) -> dict[str, float]:
    """Dice by id, chosen so that the views' means are all different: view v scores about
    0.80 + 0.01 * (v - 1), car by car a little apart."""
    scores = {}
    for n, image_id in enumerate(dataset.ids):
        view = int(view_of(image_id))
        scores[image_id] = 0.80 + 0.01 * (view - 1) + 0.001 * (n % 2)
    return scores


def test_the_view_figure_draws_a_bar_per_view_as_high_as_its_dice(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:48])  # three cars' 16 views
    scores = view_scores(dataset)
    report = write_report(tmp_path, scores, {}, {}, dataset, 0.5, None)
    image = pixels(report.files["views"])
    assert image.shape == (380, 1100, 3)  # figsize (11, 3.8) at 100 dpi
    views_panel, cars_panel = image[:, :640], image[:, 640:]  # width ratios 3 : 2
    assert not where(cars_panel, VIEW_BAR).any() and not where(views_panel, CAR_BAR).any()
    bars = where(views_panel, VIEW_BAR)
    columns = runs(bars.any(axis=0))
    assert len(columns) == len(report.by_view) == 16
    # a bar's height from its top (the legend, lower right, hides some bars' feet)
    base = np.flatnonzero(bars.any(axis=1)).max() + 1
    heights = [base - np.flatnonzero(bars[:, a:b].any(axis=1)).min() for a, b in columns]
    values = list(report.by_view.values())  # in view order, left to right
    assert np.argsort(heights).tolist() == np.argsort(values).tolist()
    assert heights[0] < heights[-1] / 2  # the axis starts below the worst view, not at 0
    assert where(views_panel, MEAN_LINE).sum() > 100  # the mean, across the panel
    car_bars = where(cars_panel, CAR_BAR)
    rows = runs(car_bars.any(axis=1))
    assert len(rows) == len(report.by_car) == 3
    widths = [car_bars[a:b].sum(axis=1).max() for a, b in rows]  # top to bottom
    assert widths == sorted(widths, reverse=True)  # the worst car at the bottom


def test_the_histogram_shows_the_scores_and_the_mean(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:16])
    report = write_report(tmp_path, view_scores(dataset), {}, {}, dataset, 0.5, None)
    image = pixels(report.files["histogram"])
    assert image.shape == (350, 600, 3)  # figsize (6, 3.5) at 100 dpi
    bars = where(image, VIEW_BAR)
    assert len(runs(bars.any(axis=0))) >= 8  # 16 distinct scores in 40 bins: many bars
    # the mean: a vertical line (drawn anti-aliased: part of it in its exact colour)
    assert where(image, MEAN_LINE).sum(axis=0).max() > 40


def test_the_gallery_shows_each_worst_image_with_its_error_map(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:16])
    scores = view_scores(dataset)
    worst_ids = sorted(scores, key=scores.get)[:3]
    worst = {}
    for image_id in worst_ids:  # the true mask moved 6 pixels right: false and missed car
        truth = dataset.load_mask(image_id)
        worst[image_id] = np.roll(truth, 6, axis=1)
    report = write_report(tmp_path, scores, {}, worst, dataset, 0.5, None)
    image = pixels(report.files["gallery"])
    assert image.shape == (int((2.2 * 3 + 0.5) * 100), 1200, 3)  # a row per image, 4 panels
    error_panels = image[:, 900:]  # the fourth column
    false_car, missed = where(error_panels, drawing.PREDICTION), where(error_panels, drawing.TRUTH)
    for band in np.array_split(np.arange(image.shape[0]), 3):  # a row of panels each
        assert false_car[band].sum() > 50 and missed[band].sum() > 50
    assert not where(image[:, :900], drawing.PREDICTION).any()  # only the error map has it
