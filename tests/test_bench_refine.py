"""benchmarks/bench_refine.py: Dice, and the before/after figure drawn where the masks differ."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_refine  # noqa: E402

from carseg.utils.drawing import PREDICTION, TRUTH  # noqa: E402


def test_dice_of_masks():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert bench_refine.dice(a, a) == 1.0
    assert bench_refine.dice(a, ~a) == 0.0
    assert bench_refine.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty


def test_the_figure_shows_the_median_photo_where_its_masks_differ(tmp_path):
    h, w = 64, 96
    truth = np.zeros((h, w), bool)
    truth[:, :48] = True
    image = np.full((h, w, 3), 128, np.uint8)
    before = truth.copy()
    before[:, 48:56] = True  # false car, right of the edge
    after = truth.copy()
    after[:, 44:48] = False  # missed car, left of it
    other = (0.0, np.zeros_like(image), truth, truth, truth)  # a photo where nothing changed
    pictures = [other, (0.01, image, before, after, truth), (0.02, *other[1:])]
    path = tmp_path / "edge.png"
    bench_refine.draw_figure(pictures, path, crop=(32, 48))
    grid = np.asarray(Image.open(path).convert("RGB"))
    pad = 2
    assert grid.shape == (2 * 32 + 2 * pad, 3 * 2 * 48 + 4 * pad, 3)  # 3 panels enlarged 2x
    panels = [
        grid[pad : pad + 64, pad + i * (96 + pad) : pad + i * (96 + pad) + 96] for i in range(3)
    ]
    colours = [{tuple(c) for c in p.reshape(-1, 3)} for p in panels]
    assert colours[0] == {(128, 128, 128)}  # the photo alone
    assert tuple(PREDICTION) in colours[1] and tuple(TRUTH) not in colours[1]  # before: false car
    assert tuple(TRUTH) in colours[2] and tuple(PREDICTION) not in colours[2]  # after: missed car
