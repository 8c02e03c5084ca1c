"""src/eval.py as a user runs it: the checkpoint's validation cars scored at full resolution
through the predict loop, in one process or two, from a checkpoint or its ONNX export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carseg.data.dataset import CarvanaDataset
from carseg.data.rle import read_rle_csv, rle_decode
from carseg.data.split import split_by_car
from carseg.inference.loading import load_model
from support.entry import TINY_TRAIN, run_entry, run_script
from support.refusals import (
    Row,
    a_file,
    assert_refused,
    assert_refused_by_a_subprocess,
    checkpoint,
    data_folder,
    data_with,
    empty_dir,
    foreign_checkpoint,
    not_a_checkpoint,
    onnx_file,
)

pytestmark = pytest.mark.slow


def _only_run(root: Path, task: str) -> Path:
    runs = sorted((root / "outputs" / task / "runs").iterdir())
    return runs[-1]


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return float("nan") if total == 0 else 2 * float((pred & truth).sum()) / float(total)


def test_eval_scores_validation_images_at_full_resolution(trained):
    root, ckpt, data = trained
    # another split seed in eval's own config: the checkpoint's record decides which cars
    proc = run_script(root, "eval", f"ckpt_path={ckpt}", *TINY_TRAIN[:3], "data.split_seed=7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _only_run(root, "eval")
    metrics = json.loads((run / "metrics.json").read_text())
    _, val_ids = split_by_car(CarvanaDataset(data, image_dir="train").ids, 0.2, 42)
    assert (
        split_by_car(CarvanaDataset(data, image_dir="train").ids, 0.2, 7)[1] != val_ids
    )  # (the case under test)
    assert sorted(metrics["per_image"]) == val_ids  # the cars the training run held out
    assert metrics["cars"] == load_model(ckpt)[1].split.val_cars
    values = [v for v in metrics["per_image"].values() if v is not None]
    assert metrics["mean"] == pytest.approx(np.mean(values))
    assert metrics["median"] == pytest.approx(np.median(values))
    assert metrics["min"] == pytest.approx(min(values))
    assert f"mean {metrics['mean']:.4f}" in proc.stdout
    assert metrics["model_input_size"] == [32, 48]
    csv_rows = (run / "dice_per_image.csv").read_text().splitlines()
    assert csv_rows[0] == "image,dice,size_ceiling" and len(csv_rows) == len(val_ids) + 1
    assert 0.9 < metrics["size_ceiling"] < 1.0 and "size's ceiling" in proc.stdout
    assert set(metrics["by_view"]) == {f"{v:02d}" for v in range(1, 17)}
    for name in ("dice_histogram.png", "worst_images.png", "dice_by_view.png"):
        with Image.open(run / name) as img:
            assert img.width > 300 and img.height > 200


def test_predicted_masks_give_the_dice_eval_reports(trained, tmp_path):
    """Two paths to the same number: eval's per-image Dice, and Dice of predict.py's mask files."""
    root, ckpt, data = trained
    images = tmp_path / "images"
    images.mkdir()
    _, val_ids = split_by_car(CarvanaDataset(data, image_dir="train").ids, 0.2, 42)
    for image_id in val_ids[:6]:
        (images / f"{image_id}.jpg").write_bytes((data / "train" / f"{image_id}.jpg").read_bytes())
    before = sorted(p.name for p in images.iterdir())
    proc = run_script(root, "predict", f"ckpt_path={ckpt}", f"input={images}", "overlays=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in images.iterdir()) == before  # input folder untouched
    run = _only_run(root, "predict")

    proc = run_script(root, "eval", f"ckpt_path={ckpt}", *TINY_TRAIN[:3])
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_image = json.loads((_only_run(root, "eval") / "metrics.json").read_text())["per_image"]

    truth_set = CarvanaDataset(data, image_dir="train")
    submission = read_rle_csv(run / "submission.csv")
    assert list(submission) == sorted(f"{i}.jpg" for i in val_ids[:6])  # every image, sorted
    for image_id in val_ids[:6]:
        with Image.open(run / "masks" / f"{image_id}_mask.png") as m:
            mask = np.asarray(m)
        truth = truth_set.load_mask(image_id)
        assert mask.shape == truth.shape == (64, 96)  # the original size, not the model's 32x48
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(rle_decode(submission[f"{image_id}.jpg"], mask.shape), mask)
        expected = per_image[image_id]
        got = _dice(mask.astype(bool), truth.astype(bool))
        assert (expected is None and math.isnan(got)) or got == pytest.approx(expected, abs=1e-9)
        assert (run / "overlays" / f"{image_id}_overlay.jpg").is_file()


def test_real_sample_eval_at_kaggle_resolution(sample_dir, tmp_path):
    """A model trained briefly on the real pairs is scored at 1918x1280 on the held-out car."""
    proc = run_script(
        tmp_path,
        "train",
        "data=carvana",
        f"data.root={sample_dir}",
        "data.size=[64,96]",
        "data.num_workers=0",
        "model/net=unet_small",
        "trainer.max_epochs=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ckpt,) = (tmp_path / "outputs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt")
    proc = run_script(
        tmp_path, "eval", f"ckpt_path={ckpt}", "data=carvana", f"data.root={sample_dir}", "worst=2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((_only_run(tmp_path, "eval") / "metrics.json").read_text())
    assert metrics["n_images"] == 16 and metrics["model_input_size"] == [64, 96]
    assert 0.0 <= metrics["mean"] <= 1.0


def _scores(root: Path, *args: str) -> dict:
    proc = run_script(root, "eval", *args, *TINY_TRAIN[:3])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((_only_run(root, "eval") / "metrics.json").read_text())


def test_two_processes_score_what_one_does(trained):
    """trainer.devices=2 on the CPU (DDP with gloo): each process scores its share, the first
    merges them; the scores are the one process's."""
    root, ckpt, _ = trained
    one = _scores(root, f"ckpt_path={ckpt}", "batch_size=1")
    two = _scores(root, f"ckpt_path={ckpt}", "batch_size=1", "trainer=ddp",
                  "trainer.accelerator=cpu", "trainer.devices=2")  # fmt: skip
    assert two["per_image"] == pytest.approx(one["per_image"], abs=1e-12)
    assert two["mean"] == pytest.approx(one["mean"]) and two["cars"] == one["cars"]
    run = _only_run(root, "eval")
    assert not list(run.glob("scores-rank*.csv")) and not list(run.glob(".worst-rank*"))


def test_an_onnx_export_scores_what_its_checkpoint_does(trained, tmp_path):
    root, ckpt, _ = trained
    onnx = tmp_path / "model.onnx"
    proc = run_script(root, "export", f"ckpt_path={ckpt}", f"output={onnx}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_ckpt = _scores(root, f"ckpt_path={ckpt}")
    from_onnx = _scores(root, f"onnx_path={onnx}")
    assert from_onnx["cars"] == from_ckpt["cars"]  # the split travels in the ONNX metadata
    assert from_onnx["per_image"] == pytest.approx(from_ckpt["per_image"], abs=1e-3)


def test_a_data_car_id_pattern_given_wins_over_the_checkpoints(tmp_path):
    """Other cars named by another rule, scored with split=all: the rule given reads them (the
    checkpoint recorded Kaggle's)."""
    root = data_folder(tmp_path)
    (root / "train_masks.csv").unlink(missing_ok=True)
    for folder in ("train", "train_masks"):
        for path in sorted((root / folder).iterdir()):
            path.rename(path.with_name(path.name.replace("_", "-", 1)))
    proc = run_entry(tmp_path, "eval", f"ckpt_path={checkpoint(tmp_path)}", "data=carvana",
                     f"data.root={root}", "split=all", "ceiling=false",
                     "data.car_id_pattern='(?P<car>[0-9a-f]+)-\\d+'")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((_only_run(tmp_path, "eval") / "metrics.json").read_text())
    assert len(metrics["cars"]) == 2 and metrics["n_images"] == 32


def test_a_model_trained_at_the_native_size_predicts_frames_unresized_end_to_end(
    tiny_set, tmp_path
):
    """On the synthetic set: crops of frames at their own size (80x120), validated whole, then
    eval.py at that size: the frames go to the model as they are."""
    train = run_entry(
        tmp_path, "train", "data=carvana", f"data.root={tiny_set}", "data.size=[80,120]",
        "data.crop=[48,64]", "data.num_workers=0", "model/net=unet_small", "model.net.base_width=4",
        "trainer.max_epochs=2", "logger=none",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    (ckpt,) = (tmp_path / "outputs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt")
    scored = run_entry(tmp_path, "eval", f"ckpt_path={ckpt}", "data=carvana",
                       f"data.root={tiny_set}")  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "eval" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model_input_size"] == [80, 120] and metrics["n_images"] == 16


# A user's mistake, one row each: one message, exit 2, nothing written (support.refusals).
REFUSED = [
    Row("eval without a checkpoint", "eval", lambda t: [], ["ckpt_path=<checkpoint>"]),
    Row("device=cuda in eval, the old key", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "device=cuda"],
        ["device is now trainer.accelerator"]),
    Row("trainer.gpus=1 in eval, no CUDA", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "trainer.gpus=1"],
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"]),
    Row("eval threshold=0", "eval", lambda t: [f"ckpt_path={checkpoint(t)}", "threshold=0"],
        ["threshold=0", "between 0 and 1"]),
    Row("eval split=test", "eval", lambda t: [f"ckpt_path={checkpoint(t)}", "split=test"],
        ["split='test'", "val, train, all"]),
    Row("checkpoint that is not one", "eval", lambda t: [f"ckpt_path={not_a_checkpoint(t)}"],
        ["notes.ckpt", "is not a PyTorch checkpoint"]),
    Row("checkpoint of another model config", "eval",
        lambda t: [f"ckpt_path={foreign_checkpoint(t)}"],
        ["other.ckpt", "does not fit this version's SegmentationModule"]),
    Row("eval on an empty data folder", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana", f"data.root={empty_dir(t)}"],
        ["No image folder", "empty", "train_masks"]),
    Row("eval of a folder without the checkpoint's validation cars", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana", f"data.root={data_folder(t)}"],
        ["lacks 1 of the checkpoint's 1 val car(s)", "car2", "data.root"]),
    Row("a checkpoint path that is a folder", "eval", lambda t: [f"ckpt_path={empty_dir(t)}"],
        ["is a folder, not a checkpoint file"]),
    Row("random bytes as a checkpoint", "eval",
        lambda t: [f"ckpt_path={onnx_file(t, 'random')}"],
        ["is not a PyTorch checkpoint (it does not start as torch.save's zip archive)"]),
    Row("a mask of another size than its image", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana",
                   f"data.root={data_with(t, 'mask_size')}", "split=all"],
        ["mask is 30x20 but its image is 48x32", "data.on_bad_file=skip"]),
    Row("a colour photo as a mask", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana",
                   f"data.root={data_with(t, 'photo_mask')}", "split=all"],
        ["not a black-and-white mask", "Is it a photo?", "_mask.png"]),
    Row("data.root that is a file", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana", f"data.root={a_file(t)}"],
        ["is a file, not a folder"]),
    Row("the same checkpoint twice in an ensemble", "eval",
        lambda t: [f"ckpt_path=[{checkpoint(t)},{checkpoint(t).parent / '.' / 'last.ckpt'}]"],
        ["lists", "twice", "List each model once"]),
    Row("postprocess=null", "eval", lambda t: [f"ckpt_path={checkpoint(t)}", "postprocess=null"],
        ["postprocess"]),
    Row("ceiling=perhaps", "eval", lambda t: [f"ckpt_path={checkpoint(t)}", "ceiling=perhaps"],
        ["ceiling must be true or false"]),
    Row("a typo in data.on_bad_file, checked as training checks it", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data=carvana", f"data.root={data_folder(t)}",
                   "data.on_bad_file=skipp"],
        ["data.on_bad_file='skipp'", "error, skip"]),
    Row("data.size in eval, which feeds the model size=", "eval",
        lambda t: [f"ckpt_path={checkpoint(t)}", "data.size=[64,96]"],
        ["data.size=[64,96]: data.size is a training setting", "size=[height,width]"]),
]  # fmt: skip


@pytest.mark.parametrize("row", REFUSED, ids=lambda r: r.name)
def test_a_mistake_gets_one_message_and_exit_2(row, tmp_path):
    assert_refused(row, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "row",
    [
        r
        for r in REFUSED
        if r.name in ("eval split=test", "data.size in eval, which feeds the model size=")
    ],
    ids=lambda r: r.name,
)
def test_a_real_subprocess_agrees(row, tmp_path):
    assert_refused_by_a_subprocess(row, tmp_path)
