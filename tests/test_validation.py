"""The pre-training data check: one problem per broken image, found from headers, all at once."""

from __future__ import annotations

import numpy as np
from PIL import Image

from carseg.data.file_checks import check_dataset, describe
from carseg.data.rle import rle_encode


def _pair(folder, name, size=(20, 30), mask_size=None):
    image = folder / f"{name}.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(noise).save(image)
    mask = folder / f"{name}_mask.gif"
    Image.new("P", (mask_size or size)[::-1]).save(mask)
    return image, mask


def test_clean_files_have_no_problem_and_each_kind_is_named(tmp_path):
    images, masks, rles, lines = {}, {}, {}, {}
    for name in ("ok", "short", "small_mask", "bad_mask"):
        images[name], masks[name] = _pair(tmp_path, name)
    assert check_dataset(images, masks, {}) == []

    images["short"].write_bytes(images["short"].read_bytes()[:-40])  # no JPEG end marker
    _pair(tmp_path, "small_mask", mask_size=(10, 30))
    masks["bad_mask"].write_bytes(b"GIF89a but nothing else")
    images["rle"], _ = _pair(tmp_path, "rle")
    rles["rle"], lines["rle"] = "590 20", 7  # past the 600 pixels of a 20x30 mask
    images["rle_ok"], _ = _pair(tmp_path, "rle_ok")
    rles["rle_ok"] = rle_encode(np.eye(20, 30, dtype=np.uint8))

    problems = {p.image_id: p for p in check_dataset(images, masks, rles, lines)}
    assert set(problems) == {"short", "small_mask", "bad_mask", "rle"}
    assert "truncated JPEG" in problems["short"].what and problems["short"].path == images["short"]
    assert "30x10 but its image is 30x20" in problems["small_mask"].what
    assert (
        problems["bad_mask"].what.startswith("mask ")
        and problems["bad_mask"].path == masks["bad_mask"]
    )
    assert "line 7" in problems["rle"].what and "20x30" in problems["rle"].what

    message = describe(list(problems.values()), total=len(images), shown=2)
    assert message.startswith(f"4 of {len(images)} images have a problem:")
    assert "... and 2 more" in message
