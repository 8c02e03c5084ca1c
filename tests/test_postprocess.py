"""carseg.inference.postprocess: the largest component kept, holes filled, nothing else moved."""

from __future__ import annotations

import numpy as np
import pytest

from carseg.inference.postprocess import PostProcess, fill_holes, largest_component
from carseg.utils.errors import ConfigError


def _car_with_speck_and_hole() -> np.ndarray:
    mask = np.zeros((40, 60), np.uint8)
    mask[5:30, 10:50] = 1  # the car
    mask[15:20, 25:30] = 0  # a hole in it (a window the model missed)
    mask[35:38, 2:5] = 1  # a speck of false car
    mask[0:3, 55:60] = 0
    return mask


def test_the_largest_component_is_kept_and_specks_removed():
    mask = _car_with_speck_and_hole()
    kept = largest_component(mask)
    assert kept[35:38, 2:5].sum() == 0 and kept[5:30, 10:50].sum() == mask[5:30, 10:50].sum()
    assert np.array_equal(largest_component(np.zeros((4, 4), np.uint8)), np.zeros((4, 4)))


def test_holes_are_filled_but_background_touching_the_border_is_not():
    mask = _car_with_speck_and_hole()
    filled = fill_holes(mask)
    assert filled[15:20, 25:30].all() and filled[0:5].sum() == 0
    border_notch = mask.copy()
    border_notch[5:30, 10] = 0  # not a hole: open to the frame through the left column
    border_notch[10:12, 0:11] = 0
    assert fill_holes(border_notch)[10:12, 0:10].sum() == 0


def test_the_options_apply_in_order_and_are_checked():
    mask = _car_with_speck_and_hole()
    both = PostProcess(largest_component=True, fill_holes=True)(mask)
    assert both[35:38, 2:5].sum() == 0 and both[15:20, 25:30].all()
    assert np.array_equal(PostProcess(largest_component=False, fill_holes=False)(mask), mask)
    with pytest.raises(ConfigError, match="postprocess.fill_holes must be true or false"):
        PostProcess(largest_component=False, fill_holes="yes")
