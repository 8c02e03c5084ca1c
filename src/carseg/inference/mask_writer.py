"""What predict writes, process by process, as its batches come: masks, overlays, cut-outs and
composites, and Kaggle RLE rows, merged at the end.

A ``MaskWriter`` in every process writes its masks, and its Kaggle RLE rows to a file of its own,
row by row, each after its mask; at the end the first process merges them into one
``submission.csv`` (``carseg.inference.submission``). The folder's layout is
``carseg.inference.output_folder``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter

from carseg.data.image_io import read_image, save_mask
from carseg.data.rle import rle_encode
from carseg.inference.cutouts import alpha_of, composite, save_composite, save_cutout
from carseg.inference.output_folder import Outputs, mask_name, output_name
from carseg.inference.rows import append_row, drop_partial_row
from carseg.inference.submission import Merged, merge
from carseg.utils import drawing
from carseg.utils.atomic import atomic_file
from carseg.utils.errors import TerminatedError

log = logging.getLogger(__name__)


class MaskWriter(BasePredictionWriter):
    """Writes each process's masks and rows as its batches come; merges them at the end."""

    def __init__(self, outputs: Outputs, inputs: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.outputs = outputs
        self.inputs = list(inputs)  # every input's file name, this attempt's and earlier ones'
        self.result: Merged | None = None
        self.written = 0  # inputs this process has written (or listed as failed)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs.masks.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        for path in (self.outputs.rows(rank), self.outputs.failures(rank)):
            drop_partial_row(path)  # a row a kill cut short: its input is predicted again

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        rank = trainer.global_rank
        written: list[str] = []
        for name, path, mask in zip(
            prediction["names"], prediction["paths"], prediction["masks"], strict=True
        ):
            with atomic_file(self.outputs.masks / mask_name(name)) as tmp:
                save_mask(mask, tmp, format="PNG")
            photo = None
            if self.outputs.overlays:
                photo = read_image(path)[0]
                with atomic_file(
                    self.outputs.folder / "overlays" / output_name(name, "_overlay.jpg")
                ) as t:
                    Image.fromarray(drawing.overlay(photo, mask)).save(t, format="JPEG", quality=90)
            if self.outputs.cutouts or self.outputs.background is not None:
                photo = read_image(path)[0] if photo is None else photo
                probabilities = prediction.get("probabilities", [None] * len(prediction["names"]))
                alpha = alpha_of(
                    mask, probabilities[len(written)], self.outputs.feather, self.outputs.threshold
                )
                self._write_cutout(name, photo, alpha)
            written.append(name)
            append_row(self.outputs.rows(rank), [name, rle_encode(mask)])  # after its files
        for name, reason in prediction["failed"]:
            log.warning("Skipped %s: %s", name, reason)
            append_row(self.outputs.failures(rank), [name, reason])
        self.written += len(prediction["names"]) + len(prediction["failed"])
        if trainer.received_sigterm:  # (Lightning's predict loop does not stop for it)
            raise TerminatedError(
                f"Stopped by SIGTERM after {self.written} input(s) of this run; every row "
                f"written is whole. The same command with resume=true predicts the rest into "
                f"{self.outputs.folder}"
            )

    def _write_cutout(self, name: str, photo: np.ndarray, alpha: np.ndarray) -> None:
        """``cutouts/<name>.png`` (RGBA) and/or ``composites/<name>.jpg`` (the car on the
        background), each written whole."""
        if self.outputs.cutouts:
            with atomic_file(self.outputs.folder / "cutouts" / output_name(name, ".png")) as tmp:
                save_cutout(photo, alpha, tmp)
        if self.outputs.background is not None:
            background = self.outputs.background
            if isinstance(background, Path):
                background = read_image(background)[0]
            with atomic_file(self.outputs.folder / "composites" / output_name(name, ".jpg")) as tmp:
                save_composite(composite(photo, alpha, background), tmp)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier("carseg-merge")  # every process has written its rows
        if trainer.is_global_zero:
            self.result = merge(self.outputs, self.inputs)
