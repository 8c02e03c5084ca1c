"""carseg.training.callbacks: TensorBoard's images and HPARAMS, and summary.json, as a run writes
them."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from carseg.data.transforms import denormalize
from carseg.training.callbacks import HyperparameterLogger, RunSummary, ValidationImageLogger
from carseg.training.callbacks.summary import git_commit
from carseg.training.segmentation_module import SegmentationModule
from carseg.utils.drawing import TRUTH
from carseg.utils.errors import ConfigError
from support.browser import chromium, needs_chromium
from support.configs import build_callback, build_datamodule, build_model
from support.entry import REPO, TINY_TRAIN, run_script


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 0, "columns": 4, "panel_height": 160}, "num_images"),
        ({"num_images": 8, "columns": 0, "panel_height": 160}, "columns"),
        ({"num_images": 8, "columns": 4, "panel_height": 4}, "panel_height"),
    ],
)
def test_image_logger_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ValidationImageLogger(**kwargs)


def test_summary_and_hparams_reject_an_unknown_mode(tmp_path):
    with pytest.raises(ConfigError, match="mode"):
        RunSummary(output_dir=tmp_path, monitor="val/dice", mode="maximum")
    with pytest.raises(ConfigError, match="mode"):
        HyperparameterLogger(monitor="val/dice", mode="best", exclude=[])


GREEN = TRUTH


def _fit(tiny_set: Path, tmp_path: Path, logger, callbacks, epochs=2, module=None) -> pl.Trainer:
    pl.seed_everything(0)
    datamodule = build_datamodule(
        tiny_set, size=(32, 48), batch_size=8, num_workers=0, augment=False
    )
    module = module or build_model(base_width=4, depth=2, lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.fixture(scope="module")
def fitted(tiny_set, tmp_path_factory):
    """A 3-epoch fit on the tiny set with all three callbacks and a TensorBoard logger."""
    tmp = tmp_path_factory.mktemp("fit")
    images = ValidationImageLogger(num_images=4, columns=2, panel_height=64)
    checkpoint = ModelCheckpoint(
        dirpath=tmp / "checkpoints",
        filename="epoch_{epoch:03d}",
        auto_insert_metric_name=False,
        monitor="val/dice",
        mode="max",
    )
    logger = TensorBoardLogger(tmp / "tensorboard", name="", version="", default_hp_metric=False)
    callbacks = [
        checkpoint,
        images,
        build_callback("hparams"),
        build_callback("run_summary", output_dir=tmp),
    ]
    trainer = _fit(tiny_set, tmp, logger, callbacks, epochs=3)
    events = EventAccumulator(str(tmp / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return tmp, trainer, images, events


def _decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_image_grid_shows_the_same_images_every_validation_epoch(fitted):
    _, trainer, images, events = fitted
    logged = events.Images("val/predictions")
    dice_steps = [e.step for e in events.Scalars("val/dice")]
    # one grid per validation epoch (not the sanity check), at the val/dice chart's steps
    assert len(logged) == 3 and [e.step for e in logged] == dice_steps
    # 16 validation images (one car): 4 evenly spaced, so several views
    assert len(trainer.datamodule.val_set) == 16 and images.indices == [0, 5, 10, 15]
    grids = [_decode(e) for e in logged]
    # 2 x 2 panels 64 high (32x48 scaled to 64x96), 2 pixels apart
    assert grids[0].shape == (2 * 66 + 2, 2 * 98 + 2, 3)
    # the true contours are drawn last, in pure green: the same pixels every epoch means the same
    # images with the same masks, whatever the prediction did
    contours = [(g == GREEN).all(axis=2) for g in grids]
    assert contours[0].sum() > 100
    assert all((c == contours[0]).all() for c in contours[1:])
    # and the prediction (the tint) changed while training
    assert any((g != grids[0]).any() for g in grids[1:])


def test_image_grid_matches_the_models_prediction(fitted):
    """The tinted pixels are the model's predicted car: render again and compare to predict()."""
    _, trainer, images, _ = fitted
    module = trainer.lightning_module
    preds = images.predict(module, trainer)  # (4, 1, 32, 48)
    manual = (torch.sigmoid(module.eval()(images._images)) > 0.5).cpu()
    assert torch.equal(preds, manual)
    grid = images.render(module, trainer)
    # first panel: scaled 2x (nearest) from 32x48; a predicted pixel's block holds tint, not
    # the untouched image
    panel = grid[2:66, 2:98].astype(int)
    photo = np.asarray(
        Image.fromarray(denormalize(images._images[0])).resize((96, 64), Image.Resampling.BILINEAR)
    ).astype(int)
    tinted = (panel != photo).any(axis=2)
    truth_line = (panel == GREEN).all(axis=2)
    predicted = np.kron(preds[0, 0].numpy(), np.ones((2, 2), bool)).astype(bool)
    assert (tinted[~truth_line] == predicted[~truth_line]).mean() > 0.99


def test_hparams_tab_gets_hyperparameters_and_final_metrics(fitted):
    _, _, _, events = fitted
    content = events.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    start = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    hparams = {k: v for k, v in start.hparams.items()}
    assert hparams["model.optimizer.lr"].number_value == pytest.approx(3e-3)
    assert hparams["model.net.base_width"].number_value == 4
    assert hparams["data.size"].string_value == "[32, 48]"
    assert hparams["model.loss._target_"].string_value == "carseg.models.losses.BCE"
    assert "model._recursive_" not in hparams  # Hydra's flags are not settings
    assert hparams["trainer.max_epochs"].number_value == 3
    assert "data.num_workers" not in hparams  # how data is loaded is left out
    experiment = next(d.experiment for d in data.values() if d.HasField("experiment"))
    assert {m.name.tag for m in experiment.metric_infos} == set(HyperparameterLogger.METRICS)

    dice = [e.value for e in events.Scalars("val/dice")]
    best = [e.value for e in events.Scalars("hp/best_val_dice")]
    assert best[0] == 0.0  # the starting value written with the hyperparameters
    assert best[-1] == pytest.approx(max(dice))
    assert best[1:] == pytest.approx(list(np.maximum.accumulate(dice)))
    epochs = [e.value for e in events.Scalars("hp/best_epoch")]
    assert epochs[-1] == int(np.argmax(dice))
    val_loss = [e.value for e in events.Scalars("val/loss")]
    assert events.Scalars("hp/final_val_loss")[-1].value == pytest.approx(val_loss[-1])


def test_run_summary_records_the_best_epoch_speed_and_commit(fitted):
    tmp, trainer, _, events = fitted
    summary = json.loads((tmp / "summary.json").read_text())
    dice = [e.value for e in events.Scalars("val/dice")]
    assert summary["status"] == "completed"
    assert summary["best_val_dice"] == pytest.approx(max(dice))
    assert summary["best_epoch"] == int(np.argmax(dice))
    assert summary["epochs_run"] == 3 and summary["global_step"] == trainer.global_step
    # 4 training cars x 16 views, 3 epochs
    assert summary["train_images"] == 3 * 64
    assert summary["train_images_per_s"] == pytest.approx(
        summary["train_images"] / summary["train_time_s"], rel=1e-2
    )
    assert 0 < summary["train_time_s"] < summary["wall_time_s"]
    best = Path(summary["best_checkpoint"])
    assert best.is_file() and best.name == f"epoch_{summary['best_epoch']:03d}.ckpt"
    assert torch.load(best, weights_only=True)["epoch"] == summary["best_epoch"]
    if shutil.which("git") and (REPO / ".git").exists():
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert summary["git_commit"] == head and isinstance(summary["git_dirty"], bool)


def test_without_tensorboard_the_image_and_hparams_callbacks_do_nothing(tiny_set, tmp_path):
    images = build_callback("prediction_images", num_images=2)
    callbacks = [
        images,
        build_callback("hparams"),
        build_callback("run_summary", output_dir=tmp_path / "run"),
    ]
    _fit(tiny_set, tmp_path, CSVLogger(tmp_path / "csv"), callbacks, epochs=1)
    assert images._images is None  # nothing was even predicted
    assert not list(tmp_path.rglob("events.out.tfevents*"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert Path(summary["best_checkpoint"]).is_file()  # Lightning's default checkpoint
    assert 0.0 <= summary["best_val_dice"] <= 1.0


class _Exploding(SegmentationModule):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("boom at epoch 1")
        return super().training_step(batch, batch_idx)


def test_a_failed_fit_still_leaves_a_summary(tiny_set, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        _fit(
            tiny_set,
            tmp_path,
            False,
            [build_callback("run_summary", output_dir=tmp_path)],
            epochs=3,
            module=_Exploding(**build_model(base_width=4, depth=2).hparams),
        )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom at epoch 1" in summary["error"]
    assert summary["best_epoch"] == 0 and summary["best_val_dice"] is not None


def test_fast_dev_run_writes_no_summary(tiny_set, tmp_path):
    datamodule = build_datamodule(tiny_set, size=(32, 48), batch_size=4, num_workers=0)
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        callbacks=[
            build_callback("run_summary", output_dir=tmp_path / "run"),
            build_callback("hparams"),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(build_model(base_width=4, depth=2), datamodule=datamodule)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_reads_head_and_dirty_state(tmp_path):
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    assert git_commit(tmp_path / "missing") == {"commit": None, "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    assert git_commit(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.txt").write_text("changed")
    assert git_commit(tmp_path)["dirty"] is True


# The text of a page, shadow roots included (TensorBoard's HPARAMS tab is made of Polymer
# elements, whose content lives in shadow roots that innerText does not enter).
DEEP_TEXT = """
function deep(node) {
  let text = node.shadowRoot ? deep(node.shadowRoot) : '';
  for (const child of node.childNodes) {
    text += child.nodeType === Node.TEXT_NODE ? child.textContent + ' ' : deep(child);
  }
  return text;
}
return deep(document.body);
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not answer at {url} within {timeout} s")


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_tensorboard_shows_the_dice_chart_and_prediction_images(tmp_path):
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # a short real run: 3 epochs of a small U-Net on the tiny generated set
    tiny = [o for o in TINY_TRAIN if not o.startswith("model.net.base_width=")]
    proc = run_script(
        tmp_path,
        "train",
        *tiny,
        "model.net.base_width=8",
        "model.optimizer.lr=3e-3",
        "trainer.max_epochs=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tensorboard = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run / "tensorboard")]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = None
    try:
        _wait_for_http(f"{url}/data/runs", tensorboard)
        driver = chromium(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, 60, poll_frequency=0.5)

        # TIME SERIES, filtered to the validation cards, the settings pane closed
        driver.get(f"{url}/#timeseries")
        search = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder*='Filter tags']")
        )
        search.send_keys("^val/", Keys.ESCAPE)
        for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close side pane']"):
            button.click()

        def card(title: str):
            for element in driver.find_elements(By.CSS_SELECTOR, "card-view"):
                if element.text.replace("\n", "").startswith(title):
                    return element
            return None

        # val/dice: a drawn line chart whose data table reached the last validation (step 11:
        # 3 epochs of 4 batches, logged after each epoch's last batch)
        dice_card = wait.until(lambda d: card("val/dice"))
        wait.until(lambda d: dice_card.find_elements(By.CSS_SELECTOR, "line-chart svg, canvas"))
        wait.until(lambda d: "11" in dice_card.find_element(By.CSS_SELECTOR, "tb-data-table").text)

        # val/predictions: the grid image loaded, at its size (2 rows of 4 panels 160x240)
        image_card = wait.until(lambda d: card("val/predictions"))

        def loaded_image(d):
            for image in image_card.find_elements(By.TAG_NAME, "img"):
                if d.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth", image
                ):
                    return image
            return None

        image = wait.until(loaded_image)
        size = driver.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image
        )
        assert size == [4 * 242 + 2, 2 * 162 + 2]
        assert image.is_displayed() and image.size["width"] > 300
        assert "Step 11" in image_card.text  # the slider stands at the last epoch's grid
        time.sleep(1)  # the charts' entry transition
        driver.save_screenshot(str(tmp_path / "tensorboard.png"))

        # HPARAMS: the run's hyperparameters and the hp/ metrics
        driver.get(f"{url}/#hparams")
        wait.until(lambda d: "model.optimizer.lr" in d.execute_script(DEEP_TEXT))
        text = driver.execute_script(DEEP_TEXT)
        assert "hp/best_val_dice" in text and "model.net.base_width" in text
        driver.save_screenshot(str(tmp_path / "hparams.png"))
    finally:
        if driver is not None:
            driver.quit()
        tensorboard.terminate()
        try:
            tensorboard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tensorboard.kill()
    with Image.open(tmp_path / "tensorboard.png") as shot:
        colours = np.unique(np.asarray(shot.convert("RGB")).reshape(-1, 3), axis=0)
        assert shot.size[0] == 1400 and len(colours) > 50  # not a blank page
