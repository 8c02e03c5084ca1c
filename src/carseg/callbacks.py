"""Lightning callbacks that make a run readable: prediction images, HPARAMS, and a run summary.

- ``ValidationImageLogger``: every validation epoch, a grid of the same validation images with the
  true mask (contour) and the predicted mask (tint) overlaid, in TensorBoard's IMAGES tab.
- ``HyperparameterLogger``: the hyperparameters and the final metrics in TensorBoard's HPARAMS tab,
  so the runs of a sweep can be compared side by side.
- ``RunSummary``: ``summary.json`` in the run folder at the end of ``fit`` (best val/dice, its
  epoch, epochs run, wall time, training images/s, checkpoints, git commit), which
  ``carseg.sweep`` reads to rank the jobs of a sweep.

All three are no-ops where they have nothing to do (no TensorBoard logger, a sanity check,
``fast_dev_run``), and only the global-zero process writes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from carseg.data import IMAGENET_MEAN, IMAGENET_STD
from carseg.errors import ConfigError

log = logging.getLogger(__name__)

# The folder holding src/carseg: the checkout whose commit a run records.
CODE_DIR = Path(__file__).resolve().parents[2]
MODES = ("max", "min")


def _tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _log_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs validation metrics at, so images and HPARAMS values line up with
    the val/dice chart (one less than ``global_step`` after an epoch's last batch)."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))


def _check_rgb(name: str, colour: Sequence[int]) -> tuple[int, int, int]:
    if len(colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour):
        raise ConfigError(f"{name} must be an RGB triple of integers 0-255, got {list(colour)}")
    return int(colour[0]), int(colour[1]), int(colour[2])


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


# --- drawing: numpy and Pillow only ----------------------------------------------------------


def denormalize(
    image: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """A normalised image ``(3, H, W)`` back to ``uint8`` RGB ``(H, W, 3)``."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def mask_contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` (bool ``(H, W)``) within ``width`` pixels of its edge.

    A pixel is on the contour when it is in the mask and one of its 4-neighbours, after
    ``width - 1`` erosions, is not (the image border counts as outside).
    """
    inside = mask.astype(bool)
    eroded = inside
    for _ in range(max(1, width)):
        padded = np.pad(eroded, 1, constant_values=False)
        eroded = (
            padded[1:-1, 1:-1]
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
    return inside & ~eroded


def overlay_masks(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    true_colour: Sequence[int] = (0, 255, 0),
    pred_colour: Sequence[int] = (255, 0, 255),
    alpha: float = 0.45,
    contour_width: int = 1,
) -> np.ndarray:
    """The image with the predicted mask tinted and the true mask's contour drawn over it.

    Read it as: tint outside the contour is false car, untinted car inside it is missed car.

    Args:
        image: ``uint8`` RGB ``(H, W, 3)``.
        truth: the true mask, bool or {0, 1} ``(H, W)``.
        pred: the predicted mask, bool or {0, 1} ``(H, W)``.
        true_colour: RGB of the true mask's contour.
        pred_colour: RGB of the prediction's tint.
        alpha: opacity of the tint, 0 to 1.
        contour_width: the contour's thickness in pixels.

    Returns:
        ``uint8`` RGB ``(H, W, 3)``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if truth.shape != image.shape[:2] or pred.shape != image.shape[:2]:
        raise ValueError(
            f"masks {truth.shape} and {pred.shape} must match the image's {image.shape[:2]}"
        )
    out = image.astype(np.float32)
    tinted = pred.astype(bool)
    out[tinted] = (1 - alpha) * out[tinted] + alpha * np.asarray(pred_colour, np.float32)
    out[mask_contour(truth, contour_width)] = true_colour
    return out.round().astype(np.uint8)


def image_grid(panels: Sequence[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Panels ``(H, W, 3)`` of one size in rows of ``columns``, on white, ``pad`` pixels apart."""
    if not panels:
        raise ValueError("image_grid needs at least one panel")
    h, w = panels[0].shape[:2]
    if any(p.shape != panels[0].shape for p in panels):
        raise ValueError("image_grid: every panel must have the same shape")
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = panel
    return grid


def _resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


# --- callbacks --------------------------------------------------------------------------------


class ValidationImageLogger(pl.Callback):
    """Log a grid of fixed validation images with their true and predicted masks each epoch.

    The images are chosen once, evenly spaced through the validation set (so several cars and
    views), and are the same every epoch: scrolling TensorBoard's step slider shows the prediction
    improve. Each panel is the image with the prediction tinted in ``pred_colour`` and the true
    mask's contour in ``true_colour``. Nothing happens without a TensorBoard logger.

    Args:
        num_images: how many validation images (fewer if the set is smaller).
        columns: panels per row of the grid.
        panel_height: each panel is resized to this height (aspect ratio kept), so full-resolution
            runs log small images and tiny test runs log visible ones.
        tag: the image's name in TensorBoard.
        mean: the normalisation mean the images were normalised with.
        std: the normalisation standard deviation.
        true_colour: RGB of the true mask's contour.
        pred_colour: RGB of the prediction's tint.
        alpha: opacity of the tint.
    """

    def __init__(
        self,
        num_images: int = 8,
        columns: int = 4,
        panel_height: int = 160,
        tag: str = "val/predictions",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        true_colour: Sequence[int] = (0, 255, 0),
        pred_colour: Sequence[int] = (255, 0, 255),
        alpha: float = 0.45,
    ) -> None:
        if num_images < 1 or columns < 1:
            raise ConfigError(
                f"num_images and columns must be at least 1, got {num_images} and {columns}"
            )
        if panel_height < 8:
            raise ConfigError(f"panel_height must be at least 8 pixels, got {panel_height}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError("mean and std need one value per RGB channel")
        self.num_images = num_images
        self.columns = columns
        self.panel_height = panel_height
        self.tag = tag
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.true_colour = _check_rgb("true_colour", true_colour)
        self.pred_colour = _check_rgb("pred_colour", pred_colour)
        self.alpha = alpha
        self.indices: list[int] | None = None  # positions in the validation set, fixed once
        self._images: torch.Tensor | None = None  # (N, 3, H, W) normalised
        self._masks: torch.Tensor | None = None  # (N, 1, H, W) in {0, 1}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = _tensorboard_loggers(trainer)
        if not loggers:
            return
        if self._images is None:
            self._pick(trainer.val_dataloaders)
            if self._images is None:
                return
        grid = self.render(pl_module, trainer)
        for logger in loggers:
            logger.experiment.add_image(
                self.tag, grid, global_step=_log_step(trainer), dataformats="HWC"
            )

    def _pick(self, loaders: Any) -> None:
        loader = loaders[0] if isinstance(loaders, list | tuple) and loaders else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            log.warning("ValidationImageLogger: no validation data loader, no images logged")
            return
        items = []
        if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            n = min(self.num_images, len(dataset))
            self.indices = sorted({round(float(i)) for i in np.linspace(0, len(dataset) - 1, n)})
            items = [dataset[i] for i in self.indices]
        else:  # an iterable data set: the first images, in the loader's (unshuffled) order
            for images, masks in loader:
                items += list(zip(images, masks, strict=True))
                if len(items) >= self.num_images:
                    break
            items = items[: self.num_images]
            self.indices = list(range(len(items)))
        if not items:
            return
        self._images = torch.stack([torch.as_tensor(i[0]) for i in items]).float()
        self._masks = torch.stack([torch.as_tensor(i[1]) for i in items]).float()
        if self._masks.ndim == 3:
            self._masks = self._masks.unsqueeze(1)

    @torch.no_grad()
    def predict(
        self, pl_module: pl.LightningModule, trainer: pl.Trainer | None = None
    ) -> torch.Tensor:
        """Predicted masks ``(N, 1, H, W)`` (bool) of the fixed images, predicted one at a time."""
        threshold = float(pl_module.hparams.get("threshold", 0.5))
        precision = trainer.precision_plugin if trainer is not None else None
        was_training = pl_module.training
        pl_module.eval()
        try:
            preds = []
            for image in self._images:
                x = image.unsqueeze(0).to(pl_module.device)
                if precision is not None:
                    x = precision.convert_input(x)
                    with precision.forward_context():
                        logits = pl_module(x)
                else:
                    logits = pl_module(x)
                preds.append((torch.sigmoid(logits.float()) > threshold).cpu())
        finally:
            pl_module.train(was_training)
        return torch.cat(preds)

    def render(
        self, pl_module: pl.LightningModule, trainer: pl.Trainer | None = None
    ) -> np.ndarray:
        """The grid ``uint8`` ``(H, W, 3)`` of the fixed images with true and predicted masks."""
        if self._images is None:
            raise RuntimeError("ValidationImageLogger.render: no images picked yet")
        preds = self.predict(pl_module, trainer)
        h, w = self._images.shape[-2:]
        height = self.panel_height
        width = max(1, round(w * height / h))
        contour = max(1, round(height / 80))  # 2 pixels at the default 160
        panels = []
        for image, mask, pred in zip(self._images, self._masks, preds, strict=True):
            rgb = _resize(denormalize(image, self.mean, self.std), height, width, nearest=False)
            truth = _resize((mask[0] > 0.5).numpy().astype(np.uint8), height, width, nearest=True)
            guess = _resize(pred[0].numpy().astype(np.uint8), height, width, nearest=True)
            panels.append(
                overlay_masks(
                    rgb,
                    truth > 0,
                    guess > 0,
                    self.true_colour,
                    self.pred_colour,
                    self.alpha,
                    contour,
                )
            )
        return image_grid(panels, self.columns)


class _BestTracker:
    """The best value of a logged metric over this fit's validation epochs, and its epoch."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor = monitor
        self.mode = _check_mode(mode)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def update(self, trainer: pl.Trainer) -> bool:
        """Read the monitored value after a validation epoch; True if it improved."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return False
        value = float(value)
        if math.isnan(value):
            return False
        better = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
        if better:
            self.best, self.best_epoch = value, trainer.current_epoch
        return better


def _flatten(prefix: str, params: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            _flatten(name, value, out)
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:  # lists and anything else: HPARAMS shows numbers, strings and booleans only
            out[name] = str(list(value)) if isinstance(value, list | tuple) else str(value)
    return out


class HyperparameterLogger(pl.Callback):
    """The run's hyperparameters and final metrics in TensorBoard's HPARAMS tab.

    At the start of ``fit`` it writes the HPARAMS summary (the model's and the data's
    hyperparameters as ``model.<name>`` and ``data.<name>``, the way a Hydra override names them,
    plus ``trainer.max_epochs`` and ``trainer.precision``) with the metrics below at their
    starting values; after every validation epoch it logs them as scalars, so the HPARAMS table
    shows their latest values. The TensorBoard logger's own ``hp_metric`` stays off
    (``default_hp_metric: false``): Lightning writes the HPARAMS summary only when metrics come
    with the hyperparameters.

    Metrics: ``hp/best_val_dice`` (the best ``monitor`` value so far; the name keeps
    ``val_dice`` whatever is monitored, for one HPARAMS column across runs), ``hp/best_epoch``,
    ``hp/final_val_loss`` and ``hp/final_train_loss`` (the last epoch's).

    In a sweep TensorBoard lists the hyperparameters that differ between runs first. Lightning's
    ``hparams.yaml`` in the log folder gets the dotted names too (``log_hyperparams`` keeps them).

    Args:
        monitor: the metric whose best value is reported.
        mode: ``"max"`` or ``"min"``.
        exclude: hyperparameters left out, by name or name prefix (how the data is loaded does
            not change the result).
    """

    METRICS = ("hp/best_val_dice", "hp/best_epoch", "hp/final_val_loss", "hp/final_train_loss")
    EXCLUDE = (
        "data.num_workers",
        "data.pin_memory",
        "data.persistent_workers",
        "data.validate",
        "data.on_bad_file",
        "data.cache",
        "data.cache_dir",
    )

    def __init__(
        self, monitor: str = "val/dice", mode: str = "max", exclude: Sequence[str] = EXCLUDE
    ) -> None:
        self.tracker = _BestTracker(monitor, mode)
        self.exclude = tuple(exclude)

    def hyperparameters(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The flat ``{name: number, string or bool}`` that HPARAMS shows for this run."""
        params = _flatten("model", dict(pl_module.hparams), {})
        if trainer.datamodule is not None:
            _flatten("data", dict(trainer.datamodule.hparams), params)
        params["trainer.max_epochs"] = trainer.max_epochs
        params["trainer.precision"] = str(trainer.precision)
        return {
            name: value
            for name, value in params.items()
            if not any(name == x or name.startswith(x + ".") for x in self.exclude)
        }

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker = _BestTracker(self.tracker.monitor, self.tracker.mode)
        if trainer.fast_dev_run:
            return
        start = {name: 0.0 for name in self.METRICS}
        start["hp/best_epoch"] = -1.0  # no epoch yet
        for logger in _tensorboard_loggers(trainer):
            logger.log_hyperparams(self.hyperparameters(trainer, pl_module), start)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        self.tracker.update(trainer)
        loggers = _tensorboard_loggers(trainer)
        if not loggers or self.tracker.best is None:
            return
        metrics = {"hp/best_val_dice": self.tracker.best, "hp/best_epoch": self.tracker.best_epoch}
        for key, name in (
            ("val/loss", "hp/final_val_loss"),
            ("train/loss_epoch", "hp/final_train_loss"),
        ):
            if key in trainer.callback_metrics:
                metrics[name] = float(trainer.callback_metrics[key])
        for logger in loggers:
            logger.log_metrics(metrics, step=_log_step(trainer))


def git_commit(folder: str | Path) -> dict[str, Any]:
    """``{"commit": <HEAD's hash> or None, "dirty": bool or None}`` for a folder of a checkout.

    None when git is not installed or ``folder`` is not inside a git checkout; ``dirty`` is True
    when tracked files differ from the commit or untracked files are there (``git status``).
    """
    git = shutil.which("git")
    if git is None or not Path(folder).is_dir():
        return {"commit": None, "dirty": None}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [git, *args], cwd=folder, capture_output=True, text=True, timeout=30, check=False
        )

    head = run("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = run("status", "--porcelain")
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": head.stdout.strip(), "dirty": dirty}


class RunSummary(pl.Callback):
    """Write ``summary.json`` into the run folder when ``fit`` ends (or fails).

    Keys: ``status`` (``completed``, ``failed`` or ``interrupted``), ``monitor``,
    ``best_val_dice`` and ``best_epoch`` (the best value of ``monitor``; from the checkpoint
    callback when it monitors the same metric, which also covers a resumed run), ``epochs_run``,
    ``global_step``, ``wall_time_s`` (from the start of the fit loop, after the data's setup, to
    its end), ``train_images``, ``train_time_s`` (training batches only: loading and the
    optimiser step included, validation excluded) and ``train_images_per_s``,
    ``best_checkpoint``, ``last_checkpoint``, ``git_commit``, ``git_dirty``, ``started``,
    ``finished`` (ISO times) and, for a failed run, ``error``.

    Args:
        output_dir: the run folder (Hydra's ``${paths.output_dir}``).
        monitor: the metric that ranks the epochs.
        mode: ``"max"`` or ``"min"``.
        code_dir: the checkout whose commit is recorded; None: the one holding this package.
        filename: the file's name in ``output_dir``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        monitor: str = "val/dice",
        mode: str = "max",
        code_dir: str | Path | None = None,
        filename: str = "summary.json",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / filename
        self.tracker = _BestTracker(monitor, mode)
        self.code_dir = Path(code_dir) if code_dir is not None else CODE_DIR
        self._reset()

    def _reset(self) -> None:
        self.tracker = _BestTracker(self.tracker.monitor, self.tracker.mode)
        self._fit_start = time.perf_counter()
        self._started = datetime.now(timezone.utc)
        self._train_images = 0
        self._train_time = 0.0
        self._epoch_start: float | None = None
        self._last_batch_end: float | None = None
        self._val_time_in_epoch = 0.0
        self._val_time_in_epoch_at_last_batch = 0.0
        self._val_start: float | None = None

    # timing: the span from an epoch's start to its last training batch, less any validation
    # that ran inside it (val_check_interval < 1)
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._last_batch_end = None
        self._val_time_in_epoch = self._val_time_in_epoch_at_last_batch = 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._last_batch_end = time.perf_counter()
        self._val_time_in_epoch_at_last_batch = self._val_time_in_epoch
        images = batch[0] if isinstance(batch, list | tuple) else batch
        if isinstance(images, torch.Tensor):
            self._train_images += int(images.shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()

    def _close_epoch(self) -> None:
        if self._epoch_start is not None and self._last_batch_end is not None:
            span = self._last_batch_end - self._epoch_start
            self._train_time += max(0.0, span - self._val_time_in_epoch_at_last_batch)
        self._epoch_start = self._last_batch_end = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is not None:
            self._val_time_in_epoch += time.perf_counter() - self._val_start
            self._val_start = None
        if not trainer.sanity_checking:
            self.tracker.update(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "completed")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        try:
            self._write(trainer, status, error=f"{type(exception).__name__}: {exception}")
        except Exception as err:  # never hide the exception that stopped the run behind ours
            log.warning("Could not write %s after the run failed: %s", self.path, err)

    def summary(self, trainer: pl.Trainer, status: str) -> dict[str, Any]:
        """What ``summary.json`` holds, as a dict of plain values."""
        self._close_epoch()
        best, best_epoch = self.tracker.best, self.tracker.best_epoch
        checkpoint = trainer.checkpoint_callback
        best_path = last_path = None
        if isinstance(checkpoint, ModelCheckpoint):
            best_path = checkpoint.best_model_path or None
            last_path = checkpoint.last_model_path or None
            score = checkpoint.best_model_score
            if checkpoint.monitor == self.tracker.monitor and score is not None and best_path:
                score = float(score)
                if best is None or score != best:  # resumed: the best came from an earlier fit
                    best = score
                    best_epoch = torch.load(
                        best_path, map_location="cpu", weights_only=True, mmap=True
                    )["epoch"]
        wall = time.perf_counter() - self._fit_start
        git = git_commit(self.code_dir)
        return {
            "status": status,
            "monitor": self.tracker.monitor,
            "best_val_dice": best,
            "best_epoch": best_epoch,
            "epochs_run": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(wall, 3),
            "train_images": self._train_images,
            "train_time_s": round(self._train_time, 3),
            "train_images_per_s": (
                round(self._train_images / self._train_time, 3) if self._train_time > 0 else None
            ),
            "best_checkpoint": str(Path(best_path).resolve()) if best_path else None,
            "last_checkpoint": str(Path(last_path).resolve()) if last_path else None,
            "git_commit": git["commit"],
            "git_dirty": git["dirty"],
            "started": self._started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _write(self, trainer: pl.Trainer, status: str, error: str | None = None) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        content = self.summary(trainer, status)
        if error is not None:
            content["error"] = error
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(content, indent=2) + "\n")
        log.info("Run summary written to %s", self.path)
