"""carseg.inference.output_folder: predictions never go into their input, never over an earlier
prediction unasked, and never two inputs into one mask file."""

from pathlib import Path

import pytest

from carseg.inference.output_folder import (
    Outputs,
    check_output_dir,
    check_unique_names,
    clear,
    input_names,
    mask_name,
    output_name,
)
from carseg.utils.errors import ConfigError, DataError


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


def test_outputs_are_named_after_their_input_subfolders_kept(tmp_path):
    assert mask_name("photo.jpg") == "photo_mask.png"
    assert mask_name("a/b/photo.v2.jpg") == "a/b/photo.v2_mask.png"
    assert output_name("a/photo.jpg", "_overlay.jpg") == "a/photo_overlay.jpg"
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    paths = [root / "x.jpg", root / "a" / "y.png"]
    assert input_names(paths, root) == ["x.jpg", "a/y.png"]
    assert input_names([root / "x.jpg"], root / "x.jpg") == ["x.jpg"]  # one file given


def test_overwrite_clears_every_earlier_output_and_nothing_else(tmp_path):
    outputs = Outputs(tmp_path, False, False, background=None, feather=0.0, threshold=0.5)
    earlier = [
        "masks/a_mask.png",
        "masks/sub/b_mask.png",
        "overlays/a_overlay.jpg",
        "rows-rank0.csv",
        "rows-rank1.csv",
        "failed-rank0.csv",
        "submission.csv",
        "failed.csv",
        "prediction.json",
    ]
    for name in [*earlier, "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear(outputs)
    left = sorted(str(p.relative_to(tmp_path)) for p in Path(tmp_path).rglob("*") if p.is_file())
    assert left == ["notes.txt"]
    assert not (tmp_path / "masks" / "sub").exists()
