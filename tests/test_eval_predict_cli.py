"""eval.py, predict.py, export.py and the notebook as a user runs them, on one trained model."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carseg.training.checkpoint_io import load_model
from carseg.data.dataset import CarvanaDataset
from carseg.data.image_io import read_image
from carseg.inference.predictor import Predictor, torch_forward
from carseg.data.rle import read_rle_csv, rle_decode
from carseg.data.split import split_by_car
from helpers import REPO, TINY_TRAIN, run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(project root, best checkpoint, data folder) of a tiny model trained by train.py."""
    root = tmp_path_factory.mktemp("project")
    proc = run_script(root, "train", *TINY_TRAIN, "trainer.max_epochs=3", "model.lr=3e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ckpt,) = (root / "outputs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt")
    (data,) = (root / "outputs" / "data").glob("synthetic-*")
    return root, ckpt, data


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
    _, val_ids = split_by_car(CarvanaDataset(data).ids, 0.2, 42)
    assert split_by_car(CarvanaDataset(data).ids, 0.2, 7)[1] != val_ids  # (the case under test)
    assert sorted(metrics["per_image"]) == val_ids  # the cars the training run held out
    assert metrics["cars"] == load_model(ckpt)[1].split.val_cars
    values = [v for v in metrics["per_image"].values() if v is not None]
    assert metrics["mean"] == pytest.approx(np.mean(values))
    assert metrics["median"] == pytest.approx(np.median(values))
    assert metrics["min"] == pytest.approx(min(values))
    assert f"mean {metrics['mean']:.4f}" in proc.stdout
    assert metrics["model_input_size"] == [32, 48]
    csv_rows = (run / "dice_per_image.csv").read_text().splitlines()
    assert csv_rows[0] == "image,dice" and len(csv_rows) == len(val_ids) + 1
    for name in ("dice_histogram.png", "worst_images.png"):
        with Image.open(run / name) as img:
            assert img.width > 300 and img.height > 200


def test_predicted_masks_give_the_dice_eval_reports(trained, tmp_path):
    """Two paths to the same number: eval's per-image Dice, and Dice of predict.py's mask files."""
    root, ckpt, data = trained
    images = tmp_path / "images"
    images.mkdir()
    _, val_ids = split_by_car(CarvanaDataset(data).ids, 0.2, 42)
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

    truth_set = CarvanaDataset(data)
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
    model, info = load_model(ckpt)
    rgb = read_image(image)[0]
    plain_prob = Predictor(torch_forward(model), info.size).probabilities([rgb])[0]
    mirror = Predictor(torch_forward(model), info.size).probabilities([rgb[:, ::-1].copy()])[0]
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
    assert np.array_equal(written, (mean > threshold).astype(np.uint8))
    assert not np.array_equal(written, (plain_prob > threshold).astype(np.uint8))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eager_and_onnx_predicts_like_the_checkpoint(trained, tmp_path, fmt):
    root, ckpt, data = trained
    out = tmp_path / f"model.{fmt}"
    proc = run_script(root, "export", f"ckpt_path={ckpt}", f"format={fmt}", f"output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff = float(proc.stdout.split("max |logits - eager logits| =")[1].split()[0])
    assert diff < 1e-4
    if fmt == "torchscript":  # (the check is the same for both formats)
        refused = run_script(root, "export", f"ckpt_path={ckpt}", f"format={fmt}", f"output={out}")
        assert refused.returncode == 2 and "overwrite=true" in refused.stderr
        return
    images = data / "train"
    a, b = tmp_path / "from_ckpt", tmp_path / "from_onnx"
    assert (
        run_script(
            root, "predict", f"ckpt_path={ckpt}", f"input={images}", f"output_dir={a}"
        ).returncode
        == 0
    )
    proc = run_script(root, "predict", f"onnx_path={out}", f"input={images}", f"output_dir={b}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks_a, masks_b = read_rle_csv(a / "submission.csv"), read_rle_csv(b / "submission.csv")
    assert list(masks_a) == list(masks_b)
    differing = sum(
        int((rle_decode(masks_a[k], (64, 96)) != rle_decode(masks_b[k], (64, 96))).sum())
        for k in masks_a
    )
    assert differing <= 0.0001 * 64 * 96 * len(masks_a)  # a pixel at exactly 0.5 may flip


def test_notebook_runs_headless(trained):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _, ckpt, data = trained
    notebook = nbformat.read(REPO / "notebooks" / "inspect_predictions.ipynb", as_version=4)
    os.environ.update(CARSEG_CKPT=str(ckpt), CARSEG_DATA=str(data), CARSEG_N_IMAGES="3")
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        )
        client.execute()
    finally:
        for key in ("CARSEG_CKPT", "CARSEG_DATA", "CARSEG_N_IMAGES"):
            os.environ.pop(key)
    printed = "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "mean Dice over 3 images at full resolution" in printed
    images = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert images  # the figure was drawn


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
