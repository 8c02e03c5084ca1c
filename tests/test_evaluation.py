"""Evaluation contract: which images are scored, how per-image Dice is summarised, and what the
report files hold."""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
import torch

from carseg.data.dataset import CarvanaDataset
from carseg.utils.errors import ConfigError
from carseg.inference.evaluate import images_to_score, score_images, summarise, write_report
from carseg.inference.predictor import Predictor
from carseg.data.split import SplitRecord, car_id

IDS = [f"{car}_{view:02d}" for car in ("aaa", "bbb", "ccc", "ddd") for view in (1, 2)]
RECORD = SplitRecord("/data", 0.25, 7, train_cars=["aaa", "bbb", "ccc"], val_cars=["ddd"])


def test_summary_leaves_out_images_whose_masks_are_both_empty():
    summary = summarise({"a": 1.0, "b": 0.5, "c": float("nan"), "d": 0.9})
    assert summary == pytest.approx(
        {"mean": 0.8, "median": 0.9, "min": 0.5, "max": 1.0, "n_scored": 3}
    )
    empty = summarise({"a": float("nan")})
    assert empty["n_scored"] == 0 and math.isnan(empty["mean"])


def test_val_scores_the_checkpoints_validation_cars_whatever_this_config_splits(caplog):
    # this config's own split would have validated on aaa: the record wins
    assert images_to_score(IDS, "val", RECORD, val_cars=["aaa"]) == ["ddd_01", "ddd_02"]
    with caplog.at_level(logging.WARNING):
        train = images_to_score(IDS, "train", RECORD, val_cars=["aaa"])
    assert {car_id(i) for i in train} == {"aaa", "bbb", "ccc"} and "trained on" in caplog.text


def test_all_warns_naming_the_training_cars_it_scores(caplog):
    with caplog.at_level(logging.WARNING):
        assert images_to_score(IDS, "all", RECORD, val_cars=[]) == IDS
    assert "3 car(s) the model trained on" in caplog.text and "aaa" in caplog.text


def test_a_data_folder_without_the_validation_cars_is_refused():
    other = [i for i in IDS if not i.startswith("ddd")]
    with pytest.raises(ConfigError) as err:
        images_to_score(other, "val", RECORD, val_cars=[])
    assert "ddd" in str(err.value) and "data.root" in str(err.value) and "/data" in str(err.value)


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="split='test'"):
        images_to_score(IDS, "test", RECORD, val_cars=[])


def test_old_checkpoints_use_this_configs_split_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        ids = images_to_score(IDS, "val", None, val_cars=["bbb"])
    assert ids == ["bbb_01", "bbb_02"] and "does not record its split" in caplog.text


def _constant(value: float):
    def forward(images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0], 1, *images.shape[2:]), value)

    return forward


def test_scores_and_report_files(tiny_set, tmp_path):
    """A model that calls every pixel car scores each image 2|T| / (|T| + |image|)."""
    dataset = CarvanaDataset(tiny_set, CarvanaDataset(tiny_set).ids[:5])
    predictor = Predictor(_constant(5.0), (32, 48))
    scores = score_images(dataset, predictor, threshold=0.5, batch_size=2, progress=False)
    for image_id, dice in scores.items():
        truth = dataset.load_mask(image_id)
        assert dice == pytest.approx(2 * truth.sum() / (truth.sum() + truth.size))
    report = write_report(tmp_path, scores, dataset, predictor, 0.5, worst=2, extra={"x": 1})
    metrics = json.loads(report.files["metrics"].read_text())
    assert metrics["mean"] == pytest.approx(np.mean(list(scores.values())))
    assert metrics["n_images"] == 5 and metrics["x"] == 1 and metrics["threshold"] == 0.5
    assert metrics["per_image"] == pytest.approx(scores)
    with report.files["csv"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "dice"] and len(rows) == 6
    assert {r[0]: float(r[1]) for r in rows[1:]} == pytest.approx(scores, abs=1e-6)
    for name in ("histogram", "gallery"):
        assert report.files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
