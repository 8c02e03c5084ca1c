"""What the TensorBoard callbacks share: finding the TensorBoard loggers and the step to log at."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger


def tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def log_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs validation metrics at, so images and HPARAMS values line up with
    the val/dice chart (one less than ``global_step`` after an epoch's last batch)."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))
