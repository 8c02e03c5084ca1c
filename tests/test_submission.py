"""carseg.inference.submission: every input is in the merged submission exactly once, and a
resume predicts only what an earlier run left, with the same settings."""

import json

import pytest

from carseg.inference.output_folder import Outputs
from carseg.inference.submission import done_before, left_to_predict, merge
from carseg.utils.errors import ConfigError, DataError


def _outputs(folder):
    return Outputs(folder, False, False, background=None, feather=0.0, threshold=0.5)


def test_the_merge_refuses_a_prediction_with_inputs_missing(tmp_path):
    outputs = _outputs(tmp_path)
    (tmp_path / "rows-rank0.csv").write_text("a.jpg,1 2\n")
    (tmp_path / "rows-rank1.csv").write_text("c.jpg,3 4\n")
    with pytest.raises(DataError, match="1 input\\(s\\) without a row \\(b.jpg\\)"):
        merge(outputs, ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "failed-rank1.csv").write_text("b.jpg,not a readable image\n")
    merged = merge(outputs, ["a.jpg", "b.jpg", "c.jpg"])
    assert merged.written == 2 and merged.failed == {"b.jpg": "not a readable image"}
    assert (tmp_path / "submission.csv").read_text() == "img,rle_mask\na.jpg,1 2\nc.jpg,3 4\n"
    assert (tmp_path / "failed.csv").read_text() == "img,reason\nb.jpg,not a readable image\n"


def test_the_merge_refuses_rows_of_images_that_are_not_inputs(tmp_path):
    (tmp_path / "rows-rank0.csv").write_text("a.jpg,1 2\nold.jpg,5 6\n")
    with pytest.raises(DataError, match="1 row\\(s\\) of images that are not among the inputs"):
        merge(_outputs(tmp_path), ["a.jpg"])


def test_a_resume_predicts_only_inputs_without_a_row_and_its_mask(tmp_path):
    outputs = _outputs(tmp_path)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a_mask.png").write_bytes(b"png")
    (tmp_path / "masks" / "b_mask.png").write_bytes(b"png")  # its row was never written
    (tmp_path / "rows-rank0.csv").write_text("a.jpg,1 2\nc.jpg,3 4\n")  # c: no mask
    assert done_before(outputs) == {"a.jpg": "1 2"}
    paths = [tmp_path / n for n in ("a.jpg", "b.jpg", "c.jpg")]
    names = ["a.jpg", "b.jpg", "c.jpg"]
    settings = {"model": ["m.ckpt"], "threshold": 0.5, "size": [(32, 48)]}
    todo, todo_names = left_to_predict(paths, names, outputs, True, settings)
    assert todo == paths[1:] and todo_names == ["b.jpg", "c.jpg"]
    # recorded as plain values, as they read back
    assert json.loads(outputs.record.read_text())["size"] == [[32, 48]]
    assert left_to_predict(paths, names, outputs, False, settings) == (paths, names)


def test_a_resume_with_other_settings_is_refused(tmp_path):
    outputs = _outputs(tmp_path)
    left_to_predict([], [], outputs, False, {"threshold": 0.5, "tta": False})
    with pytest.raises(ConfigError, match="threshold: 0.5 then, 0.6 now"):
        left_to_predict([], [], outputs, True, {"threshold": 0.6, "tta": False})
    left_to_predict([], [], outputs, True, {"threshold": 0.5, "tta": False})
