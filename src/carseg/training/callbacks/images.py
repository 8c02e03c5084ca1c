"""TensorBoard IMAGES: the same validation images every epoch, with true and predicted masks."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from carseg.data.transforms import denormalize
from carseg.training.callbacks.tensorboard import log_step, tensorboard_loggers
from carseg.utils import drawing
from carseg.utils.checks import check_int

log = logging.getLogger(__name__)


class ValidationImageLogger(pl.Callback):
    """Log a grid of fixed validation images with their true and predicted masks each epoch.

    The images are chosen once, evenly spaced through the validation set (so several cars and
    views), and are the same every epoch: scrolling TensorBoard's step slider shows the prediction
    improve. Each panel is ``carseg.utils.drawing.overlay``: the prediction tinted, the true mask
    outlined. Nothing happens without a TensorBoard logger.

    Args:
        num_images: how many validation images (fewer if the set is smaller).
        columns: panels per row of the grid.
        panel_height: each panel is resized to this height (aspect ratio kept), so full-resolution
            runs log small images and tiny test runs log visible ones.
        tag: the image's name in TensorBoard.
    """

    def __init__(
        self, *, num_images: int, columns: int, panel_height: int, tag: str = "val/predictions"
    ) -> None:
        self.num_images = check_int("callbacks.prediction_images.num_images", num_images, 1)
        self.columns = check_int("callbacks.prediction_images.columns", columns, 1)
        self.panel_height = check_int("callbacks.prediction_images.panel_height", panel_height, 8)
        self.tag = tag
        self.indices: list[int] | None = None  # positions in the validation set, fixed once
        self._images: torch.Tensor | None = None  # (N, 3, H, W) normalised
        self._masks: torch.Tensor | None = None  # (N, 1, H, W) in {0, 1}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = tensorboard_loggers(trainer)
        if not loggers:
            return
        if self._images is None:
            self._pick(trainer.val_dataloaders)
            if self._images is None:
                return
        grid = self.render(pl_module, trainer)
        for logger in loggers:
            logger.experiment.add_image(
                self.tag, grid, global_step=log_step(trainer), dataformats="HWC"
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
            rgb = drawing.resize(denormalize(image), height, width, nearest=False)
            truth = drawing.resize(
                (mask[0] > 0.5).numpy().astype(np.uint8), height, width, nearest=True
            )
            guess = drawing.resize(pred[0].numpy().astype(np.uint8), height, width, nearest=True)
            panels.append(drawing.overlay(rgb, guess > 0, truth > 0, contour))
        return drawing.image_grid(panels, self.columns)
