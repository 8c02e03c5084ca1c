"""carseg.inference.mask_writer: each process writes whole masks and, after each, its row; a
SIGTERM stops it after a batch with every row whole, and the first process merges at the end."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from carseg.data.image_io import read_mask
from carseg.data.rle import rle_decode
from carseg.inference.mask_writer import MaskWriter
from carseg.inference.output_folder import Outputs
from carseg.utils.errors import TerminatedError


def _trainer(rank=0, sigterm=False):
    return SimpleNamespace(
        global_rank=rank,
        received_sigterm=sigterm,
        is_global_zero=rank == 0,
        strategy=SimpleNamespace(barrier=lambda name: None),
    )


@pytest.fixture
def photos(tmp_path):
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(path)
        paths.append(path)
    return paths


def _batch(paths):
    masks = [np.zeros((4, 6), np.uint8), np.ones((4, 6), np.uint8)]
    masks[0][1:3, 2:5] = 1
    return {
        "names": [p.name for p in paths],
        "paths": paths,
        "masks": masks,
        "failed": [("c.png", "not a readable image")],
    }


def test_a_batch_writes_masks_cutouts_composites_and_rows_then_the_merge(tmp_path, photos):
    out = tmp_path / "pred"
    outputs = Outputs(out, True, True, background=(0, 0, 255), feather=0.0, threshold=0.5)
    writer = MaskWriter(outputs, ["a.png", "b.png", "c.png"])
    trainer = _trainer(rank=1)
    writer.on_predict_start(trainer, None)
    (out / "rows-rank1.csv").write_text("z.png,1 2\ncut sh")  # a row a kill cut short
    writer.on_predict_start(trainer, None)
    prediction = _batch(photos)
    writer.write_on_batch_end(trainer, None, prediction, None, None, 0, 0)
    assert writer.written == 3
    for name, mask in zip(("a", "b"), prediction["masks"], strict=True):
        assert np.array_equal(read_mask(out / "masks" / f"{name}_mask.png"), mask)
        assert (out / "overlays" / f"{name}_overlay.jpg").is_file()
        cutout = np.asarray(Image.open(out / "cutouts" / f"{name}.png"))
        assert cutout.shape == (4, 6, 4) and np.array_equal(cutout[..., 3] == 255, mask == 1)
        assert (out / "composites" / f"{name}.jpg").is_file()
    rows = (out / "rows-rank1.csv").read_text().splitlines()
    assert rows[0] == "z.png,1 2"  # the whole row is kept, the cut one dropped
    name, rle = rows[1].split(",")
    assert name == "a.png" and np.array_equal(rle_decode(rle, (4, 6)), prediction["masks"][0])
    assert (out / "failed-rank1.csv").read_text() == "c.png,not a readable image\n"
    writer.on_predict_end(trainer, None)  # not the first process: no merge
    assert writer.result is None and not (out / "submission.csv").exists()
    (out / "rows-rank1.csv").write_text("\n".join(rows[1:]) + "\n")
    writer.on_predict_end(_trainer(rank=0), None)
    assert writer.result.written == 2 and writer.result.failed == {"c.png": "not a readable image"}


def test_sigterm_stops_after_the_batch_with_every_row_whole(tmp_path, photos):
    outputs = Outputs(tmp_path / "pred", False, False, background=None, feather=0, threshold=0.5)
    writer = MaskWriter(outputs, ["a.png", "b.png", "c.png"])
    trainer = _trainer(sigterm=True)
    writer.on_predict_start(trainer, None)
    with pytest.raises(TerminatedError, match="after 3 input\\(s\\).*resume=true") as err:
        writer.write_on_batch_end(trainer, None, _batch(photos), None, None, 0, 0)
    assert err.value.exit_code == 143
    assert len((tmp_path / "pred" / "rows-rank0.csv").read_text().splitlines()) == 2
