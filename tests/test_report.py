"""carseg.inference.report: the evaluation's numbers, by view and by car, and its pictures."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from carseg.data.dataset import CarvanaDataset
from carseg.inference.report import mean_by, summarise, view_of, write_report


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
    for name in ("histogram", "gallery", "views"):
        assert report.files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ids_not_in_kaggles_form_have_no_view_figure(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:2])
    scores = {"photo": 0.9, "other": 0.8}
    report = write_report(tmp_path, scores, {}, {}, dataset, 0.5, None)
    assert "views" not in report.files and report.by_view == {} and report.ceiling is None
