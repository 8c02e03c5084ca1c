"""carseg.inference.mask_writer: predictions never go into their input, never over an earlier
prediction unasked, and every input is in the merged submission exactly once."""

import pytest

from carseg.inference.mask_writer import Outputs, check_output_dir, check_unique_names, merge
from carseg.utils.errors import ConfigError, DataError


def test_the_merge_refuses_a_prediction_with_inputs_missing(tmp_path):
    outputs = Outputs(tmp_path, overlays=False)
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
        merge(Outputs(tmp_path, overlays=False), ["a.jpg"])


def test_output_dir_never_inside_input_and_never_over_earlier_predictions(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_output_dir(inputs / "out", inputs, overwrite=True)
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_output_dir(inputs, inputs, overwrite=True)
    out = tmp_path / "out"
    check_output_dir(out, inputs, overwrite=False)  # new folder: fine
    (out / "masks").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overwrite=true"):
        check_output_dir(out, inputs, overwrite=False)
    check_output_dir(out, inputs, overwrite=True)


def test_inputs_whose_masks_would_share_a_name_are_refused(tmp_path):
    paths = [tmp_path / "car.jpg", tmp_path / "car.png", tmp_path / "other.jpg"]
    with pytest.raises(DataError, match="car.jpg, car.png -> masks/car_mask.png"):
        check_unique_names(paths)
    check_unique_names(paths[1:])
