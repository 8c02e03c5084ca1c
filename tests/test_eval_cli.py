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
from helpers import TINY_TRAIN, run_script

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
    proc = run_script(root, "eval", f"ckpt_path={ckpt}", *TINY_TRAIN[:4], "data.split_seed=7")
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

    proc = run_script(root, "eval", f"ckpt_path={ckpt}", *TINY_TRAIN[:4])
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
        "model=unet_small",
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
    proc = run_script(root, "eval", *args, *TINY_TRAIN[:4])
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


def test_an_ensemble_of_one_model_twice_scores_what_the_model_does(trained):
    root, ckpt, _ = trained
    alone = _scores(root, f"ckpt_path={ckpt}")
    twice = _scores(root, f"ckpt_path=[{ckpt},{ckpt}]")
    assert twice["per_image"] == pytest.approx(alone["per_image"], abs=1e-9)
    assert twice["checkpoint"] == [str(ckpt), str(ckpt)]
