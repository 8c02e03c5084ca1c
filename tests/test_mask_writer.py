"""carseg.inference.mask_writer: predictions never go into their input, never over an earlier
prediction unasked, and every input is in the merged submission exactly once."""

import numpy as np
import pytest

from carseg.inference.mask_writer import (
    Outputs,
    alpha_of,
    check_output_dir,
    check_unique_names,
    merge,
)
from carseg.utils.errors import ConfigError, DataError


def test_the_merge_refuses_a_prediction_with_inputs_missing(tmp_path):
    outputs = Outputs(tmp_path, False, False, background=None, feather=0.0, threshold=0.5)
    (tmp_path / "rows-rank0.csv").write_text("a.jpg,1 2\n")
    (tmp_path / "rows-rank1.csv").write_text("c.jpg,3 4\n")
    with pytest.raises(DataError, match="1 input\\(s\\) without a row \\(b.jpg\\)"):
        merge(outputs, ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "failed-rank1.csv").write_text("b.jpg,not a readable image\n")
    merged = merge(outputs, ["a.jpg", "b.jpg", "c.jpg"])
    assert merged.written == 2 and merged.failed == {"b.jpg": "not a readable image"}
    assert (tmp_path / "submission.csv").read_text() == "img,rle_mask\na.jpg,1 2\nc.jpg,3 4\n"


def test_the_merge_refuses_rows_of_images_that_are_not_inputs(tmp_path):
    (tmp_path / "rows-rank0.csv").write_text("a.jpg,1 2\nold.jpg,5 6\n")
    with pytest.raises(DataError, match="1 row\\(s\\) of images that are not among the inputs"):
        merge(
            Outputs(tmp_path, False, False, background=None, feather=0.0, threshold=0.5),
            ["a.jpg"],
        )


def test_output_dir_never_inside_input_and_never_over_earlier_predictions(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for out, where in [(inputs / "out", "is inside"), (inputs, "is"), (tmp_path, "holds")]:
        with pytest.raises(ConfigError, match=f"output_dir={out} {where} what this command"):
            check_output_dir(out, inputs, overwrite=True, background=None)
    # the input is a folder inside the output (an earlier prediction's masks): overwrite=true
    # would clear it, resume=true write into it
    with pytest.raises(ConfigError, match="holds what this command reads"):
        check_output_dir(tmp_path / "pred", tmp_path / "pred" / "masks", True, background=None)
    with pytest.raises(ConfigError, match="holds what this command reads"):
        check_output_dir(tmp_path, inputs / "one.jpg", overwrite=False, background=None)
    out = tmp_path / "out"
    check_output_dir(out, inputs, overwrite=False, background=None)  # new folder: fine
    (out / "masks").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overwrite=true"):
        check_output_dir(out, inputs, overwrite=False, background=None)
    check_output_dir(out, inputs, overwrite=True, background=None)


def test_inputs_whose_masks_would_share_a_name_are_refused(tmp_path):
    names = ["car.jpg", "car.png", "other.jpg"]
    with pytest.raises(DataError, match="car.jpg, car.png -> masks/car_mask.png"):
        check_unique_names(names)
    check_unique_names(names[1:])
    check_unique_names(["a/car.jpg", "b/car.jpg"])  # subfolders keep them apart (recursive=true)


@pytest.mark.parametrize("place", ["composites/x.jpg", "cutouts/x.png", "masks/sub/x.png"])
def test_a_background_among_the_outputs_is_refused_before_overwrite_deletes_it(tmp_path, place):
    inputs, out = tmp_path / "photos", tmp_path / "out"
    inputs.mkdir()
    background = out / place
    with pytest.raises(ConfigError, match=f"background={background} lies in"):
        check_output_dir(out, inputs, overwrite=True, background=background)
    check_output_dir(out, inputs, overwrite=True, background=tmp_path / "elsewhere.jpg")


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.85])
@pytest.mark.parametrize("feather", [0.05, 0.2, 0.5])
def test_a_feathered_alpha_follows_the_final_mask(threshold, feather):
    """Alpha is at least 128 exactly where the mask is car, whatever the threshold; a component
    post-processing removed is transparent, fringe included, and a filled hole opaque."""
    rows, cols = np.mgrid[0:60, 0:120]
    big = np.clip(1.2 - np.hypot(rows - 30, cols - 35) / 20, 0, 1)  # a car, soft-edged
    small = np.clip(1.2 - np.hypot(rows - 30, cols - 95) / 10, 0, 1)  # a smaller one
    probabilities = (np.maximum(big, small) * 255).round().astype(np.uint8)
    probabilities[28:33, 33:38] = 0  # a hole in the big car
    mask = (probabilities / 255.0 > threshold).astype(np.uint8)
    alpha = alpha_of(mask, probabilities, feather, threshold)
    assert np.array_equal(alpha >= 128, mask == 1)
    largest = mask.copy()  # largest_component and fill_holes
    largest[:, 65:] = 0
    largest[28:33, 33:38] = 1
    alpha = alpha_of(largest, probabilities, feather, threshold)
    assert (alpha[:, 70:] == 0).all() and (alpha[28:33, 33:38] == 255).all()
    assert np.array_equal(alpha >= 128, largest == 1)
