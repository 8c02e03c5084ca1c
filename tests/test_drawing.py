"""carseg.utils.drawing: the one colour scheme of every picture."""

from __future__ import annotations

import numpy as np
import pytest

from carseg.utils.drawing import ALPHA, PREDICTION, TRUTH, image_grid, mask_contour, overlay


def test_mask_contour_is_the_ring_inside_the_mask():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True  # a 6x6 square
    ring = mask_contour(mask)
    assert ring.sum() == 20 and not ring[3:7, 3:7].any() and (ring <= mask).all()
    assert mask_contour(mask, width=2).sum() == 20 + 12
    # the image border is outside: a full mask's contour is the frame
    assert mask_contour(np.ones((4, 5), bool)).sum() == 4 * 5 - 2 * 3
    assert not mask_contour(np.zeros((4, 5), bool)).any()


GREEN = TRUTH


def test_overlay_tints_the_prediction_and_outlines_the_truth():
    image = np.full((10, 10, 3), 100, np.uint8)
    truth = np.zeros((10, 10), bool)
    truth[2:8, 2:8] = True
    pred = np.zeros((10, 10), bool)
    pred[0:5, 0:5] = True  # false car at (0, 0), hits the truth's corner
    out = overlay(image, pred, truth)
    assert out.dtype == np.uint8 and out.shape == image.shape
    tint = tuple(round((1 - ALPHA) * 100 + ALPHA * c) for c in PREDICTION)
    assert tuple(out[0, 0]) == tint  # false car: tinted, outside the outline
    assert tuple(out[2, 5]) == GREEN and tuple(out[7, 7]) == GREEN  # contour, on or off the tint
    assert tuple(out[5, 5]) == (100, 100, 100)  # missed car inside the contour: untouched
    assert tuple(out[9, 9]) == (100, 100, 100)  # true background
    with pytest.raises(ValueError, match="must match"):
        overlay(image, pred, truth[:5])
    # without a truth (predict's overlays): the tint only
    alone = overlay(image, pred)
    assert tuple(alone[0, 0]) == tint
    assert tuple(alone[2, 5]) == tuple(alone[7, 7]) == (100, 100, 100)


def test_image_grid_places_panels_in_rows():
    panels = [np.full((4, 6, 3), i * 40, np.uint8) for i in range(5)]
    grid = image_grid(panels, columns=2, pad=1)
    assert grid.shape == (3 * 5 + 1, 2 * 7 + 1, 3)
    assert (grid[1:5, 1:7] == 0).all() and (grid[6:10, 8:14] == 120).all()  # panels 0 and 3
    assert (grid[11:15, 8:14] == 255).all()  # the sixth place is empty
    with pytest.raises(ValueError, match="same shape"):
        image_grid([panels[0], np.zeros((5, 6, 3), np.uint8)], columns=2)
