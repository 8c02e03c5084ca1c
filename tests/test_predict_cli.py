"""src/predict.py: prediction through Lightning's predict loop, split across processes, merged
into one checked submission.csv, and resumed where a killed run stopped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from carseg.data.image_io import read_image
from carseg.data.split import SplitRecord
from carseg.data.synthetic import generate_dataset
from carseg.inference.loading import load_model
from carseg.training.callbacks.record import CheckpointRecorder
from support.configs import build_model, predictor
from support.entry import run_entry, run_script
from support.refusals import (
    Row,
    assert_refused,
    background_in_outputs,
    checkpoint,
    crafted_checkpoint,
    earlier_prediction,
    empty_dir,
    nan_checkpoint,
    onnx_file,
    photos,
)


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(project root, a checkpoint trained at 32x48, a folder of 32 photos at 64x96)."""
    root = tmp_path_factory.mktemp("predict")
    photos = generate_dataset(root / "set", n_cars=2, height=64, width=96, seed=0) / "train"
    torch.manual_seed(0)
    module = build_model(base_width=4, depth=2)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[CheckpointRecorder(refine=None)])  # fmt: skip
    trainer.strategy.connect(module)
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    raw["carseg"]["size"] = [32, 48]
    raw["carseg"]["split"] = SplitRecord("/d", 0.5, 1, ["a"], ["b"], None, None).to_dict()
    torch.save(raw, ckpt)
    return root, ckpt, photos


def _predict(root, ckpt, photos, out, *extra, subprocess: bool = False):
    args = [f"ckpt_path={ckpt}", f"input={photos}", f"output_dir={out}", "batch_size=1",
            "num_workers=0", "trainer.accelerator=cpu", *extra]  # fmt: skip
    return (run_script if subprocess else run_entry)(root, "predict", *args)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_two_processes_write_what_one_does_byte_for_byte(setting, tmp_path):
    root, ckpt, photos = setting
    one = _predict(root, ckpt, photos, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _predict(root, ckpt, photos, tmp_path / "two", "trainer.devices=2",
                   "trainer.strategy=ddp", subprocess=True)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    # each process wrote its share of the rows, and the first merged them
    shares = [(tmp_path / "two" / f"rows-rank{r}.csv").read_text().splitlines() for r in (0, 1)]
    assert len(shares[0]) + len(shares[1]) == 32 and min(len(s) for s in shares) >= 15
    assert (tmp_path / "two" / "submission.csv").read_bytes() == (
        tmp_path / "one" / "submission.csv"
    ).read_bytes()
    assert _files(tmp_path / "two" / "masks") == _files(tmp_path / "one" / "masks")
    rows = (tmp_path / "one" / "submission.csv").read_text().splitlines()
    assert rows[0] == "img,rle_mask" and [r.split(",")[0] for r in rows[1:]] == sorted(
        p.name for p in photos.iterdir()
    )


def test_a_killed_prediction_resumes_where_it_stopped(setting, tmp_path):
    root, ckpt, photos = setting
    full = _predict(root, ckpt, photos, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    # what a kill after 10 images leaves: 10 masks, their rows, and an 11th row cut short
    out = tmp_path / "killed"
    (out / "masks").mkdir(parents=True)
    rows = (tmp_path / "full" / "rows-rank0.csv").read_text().splitlines(keepends=True)
    for row in rows[:10]:
        name = Path(row.split(",")[0])
        mask = f"{name.stem}_mask.png"
        (out / "masks" / mask).write_bytes((tmp_path / "full" / "masks" / mask).read_bytes())
    (out / "rows-rank0.csv").write_text("".join(rows[:10]) + rows[10][:7])
    refused = _predict(root, ckpt, photos, out)
    assert refused.returncode == 2 and "already holds predictions" in refused.stderr
    resumed = _predict(root, ckpt, photos, out, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "10 of 32 inputs were predicted before" in resumed.stdout + resumed.stderr
    assert (out / "submission.csv").read_bytes() == (
        tmp_path / "full" / "submission.csv"
    ).read_bytes()
    assert _files(out / "masks") == _files(tmp_path / "full" / "masks")


def test_a_resume_with_other_settings_is_refused(setting, tmp_path):
    root, ckpt, photos = setting
    out = tmp_path / "pred"
    assert _predict(root, ckpt, photos, out).returncode == 0
    other = _predict(root, ckpt, photos, out, "resume=true", "threshold=0.3", "tta=true")
    assert other.returncode == 2, other.stderr[-2000:]
    assert (
        "other settings" in other.stderr and "threshold" in other.stderr and "tta" in other.stderr
    )
    same = _predict(root, ckpt, photos, out, "resume=true")
    assert same.returncode == 0, same.stderr[-2000:]


def test_a_resume_that_reads_every_input_leaves_no_stale_failure_list(setting, tmp_path):
    root, ckpt, photos = setting
    out = tmp_path / "pred"
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(photos.iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    broken = sorted(folder.iterdir())[0]
    good = broken.read_bytes()
    broken.write_bytes(b"")
    first = _predict(root, ckpt, folder, out)
    assert first.returncode == 2 and (out / "failed.csv").is_file()
    broken.write_bytes(good)  # the file is fixed, the run resumed
    again = _predict(root, ckpt, folder, out, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (out / "failed.csv").exists()
    assert len((out / "submission.csv").read_text().splitlines()) == 4


@pytest.mark.slow
def test_predict_tta_and_refusing_to_overwrite(trained, tmp_path):
    root, ckpt, data = trained
    image = data / "train" / sorted(os.listdir(data / "train"))[0]
    out = tmp_path / "pred"
    plain = run_script(root, "predict", f"ckpt_path={ckpt}", f"input={image}", f"output_dir={out}")
    assert plain.returncode == 0, plain.stderr[-3000:]
    first = (out / "submission.csv").read_text()
    again = run_script(
        root, "predict", f"ckpt_path={ckpt}", f"input={image}", f"output_dir={out}", "tta=true"
    )
    assert again.returncode == 2 and "overwrite=true" in again.stderr
    assert (out / "submission.csv").read_text() == first  # nothing was replaced
    # TTA writes the mean of the image's and its mirror's probabilities, thresholded. At the
    # median of that mean half the pixels are car, so a plain prediction would differ.
    model, record = load_model(ckpt)
    rgb = read_image(image)[0]
    plain_prob = predictor(model, record.size).probabilities([rgb])[0]
    mirror = predictor(model, record.size).probabilities([rgb[:, ::-1].copy()])[0]
    mean = (plain_prob + mirror[:, ::-1]) / 2
    threshold = float(np.median(mean))
    tta = run_script(
        root,
        "predict",
        f"ckpt_path={ckpt}",
        f"input={image}",
        f"output_dir={out}",
        "tta=true",
        "overwrite=true",
        f"threshold={threshold!r}",
    )
    assert tta.returncode == 0, tta.stderr[-3000:]
    written = np.asarray(Image.open(out / "masks" / f"{image.stem}_mask.png"))
    # (the two paths round differently by up to 1e-7: a pixel that close to the threshold may flip)
    assert (written != (mean > threshold)).sum() <= 3
    assert (written != (plain_prob > threshold)).sum() > 100


# A user's mistake, one row each: one message, exit 2, nothing written (support.refusals).
REFUSED = [
    Row("predict without input", "predict", lambda t: ["ckpt_path=x.ckpt"], ["input is required"]),
    Row("trainer.gpus=1 in predict, no CUDA", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "trainer.gpus=1"],
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"]),
    Row("predict resume=true and overwrite=true", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "resume=true",
                   "overwrite=true"], ["resume=true and overwrite=true"]),
    Row("predict threshold=1.5", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "threshold=1.5"],
        ["threshold=1.5", "between 0 and 1"]),
    Row("predict batch_size=0", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "batch_size=0"],
        ["batch_size must be an integer >= 1"]),
    Row("predict on an empty folder", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={empty_dir(t)}"],
        ["No images", "nothing to predict"]),
    Row("predict inputs that share a name", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t, ('car.jpg', 'car.png'))}"],
        ["car.jpg, car.png -> masks/car_mask.png", "Rename"]),
    Row("an output_dir that holds the input, with overwrite=true", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={earlier_prediction(t) / 'masks'}",
                   f"output_dir={t / 'pred'}", "overwrite=true"],
        ["holds what this command reads", "masks"]),
    Row("an output_dir that holds the input, with resume=true", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={earlier_prediction(t) / 'masks'}",
                   f"output_dir={t / 'pred'}", "resume=true"],
        ["holds what this command reads"]),
    Row("size of 100000 pixels a side", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "size=[100000,100000]"],
        ["at most 8192 pixels a side"]),
    Row("tile=[1,1]", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "tile=[1,1]"],
        ["tile must be [height, width] in pixels, each at least 32"]),
    Row("tta=abc", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "tta=abc"],
        ["tta must be true or false, got 'abc'"]),
    Row("overlays=maybe", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "overlays=maybe"],
        ["overlays must be true or false"]),
    Row("a truncated ONNX file", "predict",
        lambda t: [f"onnx_path={onnx_file(t, 'truncated')}", f"input={photos(t)}"],
        ["truncated.onnx is not an ONNX file", "src/export.py"]),
    Row("random bytes as an ONNX file", "predict",
        lambda t: [f"onnx_path={onnx_file(t, 'random')}", f"input={photos(t)}"],
        ["random.onnx is not an ONNX file"]),
    Row("a text file as an ONNX file", "predict",
        lambda t: [f"onnx_path={onnx_file(t, 'text')}", f"input={photos(t)}"],
        ["text.onnx is not an ONNX file"]),
    Row("a missing ONNX file", "predict",
        lambda t: [f"onnx_path={t / 'nowhere.onnx'}", f"input={photos(t)}"],
        ["ONNX model not found", "nowhere.onnx"]),
    Row("a checkpoint whose loss is os.system, trusted_targets=[os.system]", "predict",
        lambda t: [f"ckpt_path={crafted_checkpoint(t)}", f"input={photos(t)}",
                   "trusted_targets=[os.system]"],
        ["_target_ 'os.system' is a function, not a class", "never a function"]),
    Row("trusted_targets=os.system, without brackets", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "trusted_targets=os.system"],
        ["_target_ 'os.system' is a function, not a class"]),
    Row("a checkpoint whose network is a trusted class of another kind", "predict",
        lambda t: [f"ckpt_path={crafted_checkpoint(t, 'net', 'subprocess.Popen')}",
                   f"input={photos(t)}", "trusted_targets=[subprocess.Popen]"],
        ["model.net: _target_ 'subprocess.Popen' is not a subclass of torch.nn.Module"]),
    Row("a background in the outputs an overwrite clears", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "cutouts=true",
                   f"background={background_in_outputs(t)}", f"output_dir={t / 'pred'}",
                   "overwrite=true"],
        ["composites/x.jpg lies in", "which this command writes"]),
    Row("postprocess=null", "predict",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"input={photos(t)}", "postprocess=null"],
        ["postprocess=None", "postprocess.largest_component=false"]),
    Row("a checkpoint holding NaN weights", "predict",
        lambda t: [f"ckpt_path={nan_checkpoint(t)}", f"input={photos(t)}"],
        ["nan.ckpt holds NaN or infinite weights", "use an earlier checkpoint"]),
]  # fmt: skip


@pytest.mark.parametrize("row", REFUSED, ids=lambda r: r.name)
def test_a_mistake_gets_one_message_and_exit_2(row, tmp_path):
    assert_refused(row, tmp_path)


def test_prediction_skips_unreadable_inputs_lists_them_and_exits_2(tmp_path, monkeypatch):
    folder = photos(tmp_path, ("a.jpg", "b.png", "c.jpg"))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo")
    Image.new("RGB", (300, 200)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 200 // 3)  # huge.png: past the limit
    out = tmp_path / "pred"
    proc = run_entry(tmp_path, "predict", f"ckpt_path={checkpoint(tmp_path)}", f"input={folder}",
                     f"output_dir={out}")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "3 of 6 inputs could not be read" in proc.stderr
    for name, why in [("empty.jpg", "empty"), ("notes.jpg", "not a readable image"),
                      ("huge.png", "decompression-bomb")]:  # fmt: skip
        assert name in proc.stderr and why in proc.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "a_mask.png", "b_mask.png", "c_mask.png"]  # fmt: skip
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "img,rle_mask" and [r.split(",")[0] for r in rows[1:]] == [
        "a.jpg", "b.png", "c.jpg"]  # fmt: skip
    failed = (out / "failed.csv").read_text().splitlines()
    assert failed[0] == "img,reason" and len(failed) == 4


def test_sigterm_stops_a_prediction_whole_and_resume_finishes_it(setting, tmp_path, monkeypatch):
    """SIGTERM (what SLURM and Kubernetes send first) during the third batch: the run stops
    after writing it, exit 143, every row whole; resume=true writes what a full run writes."""
    import signal

    from carseg.inference.mask_writer import MaskWriter

    root, ckpt, photos = setting
    full = _predict(root, ckpt, photos, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    write = MaskWriter.write_on_batch_end

    def terminated_in_batch_2(self, trainer, module, prediction, indices, batch, batch_idx, dl):
        if batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it
        return write(self, trainer, module, prediction, indices, batch, batch_idx, dl)

    monkeypatch.setattr(MaskWriter, "write_on_batch_end", terminated_in_batch_2)
    out = tmp_path / "stopped"
    stopped = _predict(root, ckpt, photos, out)
    monkeypatch.undo()
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert (
        "Stopped by SIGTERM after 3 input(s)" in stopped.stderr and "resume=true" in stopped.stderr
    )
    rows = (out / "rows-rank0.csv").read_text().splitlines()
    assert len(rows) == 3 and len(list((out / "masks").iterdir())) == 3
    resumed = _predict(root, ckpt, photos, out, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "submission.csv").read_bytes() == (
        tmp_path / "full" / "submission.csv"
    ).read_bytes()


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\r"])
def test_file_names_holding_line_separators_finish_and_resume(setting, tmp_path, separator):
    root, ckpt, photos = setting
    folder = tmp_path / "odd names"
    folder.mkdir()
    sources = sorted(photos.iterdir())[:3]
    names = [f"a{separator}b.jpg", "plain.jpg", f"{separator}c.jpg"]
    for source, name in zip(sources, names, strict=True):
        (folder / name).write_bytes(source.read_bytes())
    out = tmp_path / "pred"
    first = _predict(root, ckpt, folder, out)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _predict(root, ckpt, folder, out, "resume=true")  # nothing left: all rows read back
    assert again.returncode == 0
    assert "3 of 3 inputs were predicted before" in again.stdout + again.stderr
    rows = (out / "rows-rank0.csv").read_bytes()
    assert rows.count(b"\n") == 3  # the file did not grow
    from carseg.data.rle import read_rle_csv

    assert sorted(read_rle_csv(out / "submission.csv")) == sorted(names)


def test_subfolders_are_named_unless_recursive_predicts_them(setting, tmp_path):
    root, ckpt, photos = setting
    folder = tmp_path / "photos"
    (folder / "sub" / "deeper").mkdir(parents=True)
    sources = sorted(photos.iterdir())
    (folder / "top.jpg").write_bytes(sources[0].read_bytes())
    (folder / "sub" / "top.jpg").write_bytes(sources[1].read_bytes())  # the same name, elsewhere
    (folder / "sub" / "deeper" / "x.jpg").write_bytes(sources[2].read_bytes())
    flat = _predict(root, ckpt, folder, tmp_path / "flat")
    assert flat.returncode == 0, flat.stderr[-3000:]
    said = flat.stdout + flat.stderr
    assert "1 subfolder(s)" in said and "sub/" in said and "recursive=true" in said
    assert [p.name for p in (tmp_path / "flat" / "masks").iterdir()] == ["top_mask.png"]
    deep = _predict(root, ckpt, folder, tmp_path / "deep", "recursive=true", "overlays=true")
    assert deep.returncode == 0, deep.stderr[-3000:]
    masks = sorted(p.relative_to(tmp_path / "deep" / "masks").as_posix()
                   for p in (tmp_path / "deep" / "masks").rglob("*.png"))  # fmt: skip
    assert masks == ["sub/deeper/x_mask.png", "sub/top_mask.png", "top_mask.png"]
    rows = (tmp_path / "deep" / "submission.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["sub/deeper/x.jpg", "sub/top.jpg", "top.jpg"]
    assert (tmp_path / "deep" / "overlays" / "sub" / "deeper" / "x_overlay.jpg").is_file()


def test_a_full_disk_while_writing_a_mask_is_named_and_keeps_what_was_written(
    setting, tmp_path, monkeypatch
):
    import errno

    from carseg.inference import mask_writer

    root, ckpt, photos = setting
    save, calls = mask_writer.save_mask, []

    def fills_the_disk(mask, path, format=None):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save(mask, path, format=format)

    monkeypatch.setattr(mask_writer, "save_mask", fills_the_disk)
    out = tmp_path / "pred"
    proc = _predict(root, ckpt, photos, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "No space left on the device while writing" in proc.stderr and "MiB free" in proc.stderr
    assert len(list((out / "masks").iterdir())) == 3  # whole masks, no half-written fourth
    assert len((out / "rows-rank0.csv").read_text().splitlines()) == 3
    monkeypatch.undo()
    resumed = _predict(root, ckpt, photos, out, "resume=true")
    assert resumed.returncode == 0 and (out / "submission.csv").is_file()


def test_a_read_only_output_dir_is_refused_before_any_work(setting, tmp_path):
    from support.files import read_only

    root, ckpt, photos = setting
    out = tmp_path / "mounted"
    out.mkdir()
    with read_only(out):
        proc = _predict(root, ckpt, photos, out / "pred")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (
        "output_dir=" in proc.stderr and "cannot be written (Read-only file system)" in proc.stderr
    )
    assert list(out.iterdir()) == []


def test_cutouts_and_composites_are_the_photo_with_the_car_as_alpha(setting, tmp_path):
    root, ckpt, photos = setting
    photo = sorted(photos.iterdir())[0]
    model, record = load_model(ckpt)  # (an untrained model: cut at its median, half is car)
    threshold = float(
        np.median(predictor(model, record.size).probabilities([read_image(photo)[0]])[0])
    )
    out = tmp_path / "pred"
    proc = _predict(root, ckpt, photos, out, "cutouts=true", "background=[0,0,255]",
                    f"threshold={threshold!r}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out / "cutouts" / f"{photo.stem}.png") as cut:
        rgba = np.asarray(cut)
    assert cut.mode == "RGBA" and rgba.shape == (64, 96, 4)
    mask = np.asarray(Image.open(out / "masks" / f"{photo.stem}_mask.png"))
    assert np.array_equal(rgba[..., 3], mask * 255)  # hard edge: alpha is the mask
    assert np.array_equal(rgba[..., :3], read_image(photo)[0])  # the photo itself
    with Image.open(out / "composites" / f"{photo.stem}.jpg") as comp:
        composite = np.asarray(comp).astype(int)
    background = mask == 0
    assert np.abs(composite[background] - [0, 0, 255]).mean() < 12  # JPEG's noise
    assert np.abs(composite[~background] - read_image(photo)[0][~background]).mean() < 12
    # the same rules as masks: a second run is refused, a resume with other settings too
    again = _predict(root, ckpt, photos, out, "cutouts=true")
    assert again.returncode == 2 and "already holds predictions" in again.stderr
    other = _predict(root, ckpt, photos, out, "resume=true", "cutouts=true", "cutout_feather=0.2",
                     "background=[0,0,255]", f"threshold={threshold!r}")  # fmt: skip
    assert other.returncode == 2 and "cutout_feather" in other.stderr


def test_a_feathered_cutout_follows_the_probabilities(setting, tmp_path):
    root, ckpt, photos = setting
    out = tmp_path / "soft"
    proc = _predict(root, ckpt, photos, out, "cutouts=true", "cutout_feather=0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    photo = sorted(photos.iterdir())[0]
    model, record = load_model(ckpt)
    prob = predictor(model, record.size).probabilities([read_image(photo)[0]])[0]
    alpha = np.asarray(Image.open(out / "cutouts" / f"{photo.stem}.png"))[..., 3]
    # feather 0.5: alpha is the probability itself (to the 1/255 it is stored at)
    assert np.abs(alpha.astype(float) - prob * 255).max() <= 1.5


@pytest.mark.parametrize("extra", [["threshold=0.85"], ["postprocess.largest_component=true"]])
def test_a_feathered_cutout_shows_the_car_of_the_final_mask(setting, tmp_path, extra):
    """The threshold and post-processing the masks had apply to the cut-outs: alpha is at least
    128 exactly where the mask is car."""
    root, ckpt, photos = setting
    out = tmp_path / "soft"
    proc = _predict(root, ckpt, photos, out, "cutouts=true", "cutout_feather=0.2", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for photo in sorted(photos.iterdir())[:4]:
        alpha = np.asarray(Image.open(out / "cutouts" / f"{photo.stem}.png"))[..., 3]
        mask = np.asarray(Image.open(out / "masks" / f"{photo.stem}_mask.png"))
        assert np.array_equal(alpha >= 128, mask == 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [("chartreuse-ish", "neither a colour"), ("[1,2]", "three values"), ("[0,0,300]", "three")],
)
def test_a_background_that_is_not_one_is_refused(setting, tmp_path, value, message):
    root, ckpt, photos = setting
    proc = _predict(root, ckpt, photos, tmp_path / "pred", f"background={value}")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
