"""carseg's record in every checkpoint a run saves: the model's construction and threshold, and
what the data module trained it on (the size, the split by car), so that predicting and
evaluating from the checkpoint alone feed the right size and score the cars it never saw.

The record is ``carseg.training.checkpoint_reader.CheckpointRecord``, stored under its own key
(``RECORD_KEY``) and read back by ``CheckpointRecord.from_checkpoint``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from carseg.data.datamodule import CarvanaDataModule
from carseg.training.checkpoint_reader import RECORD_KEY, CheckpointRecord
from carseg.utils.errors import ConfigError


class CheckpointRecorder(pl.Callback):
    """Write ``CheckpointRecord`` into every checkpoint: the module's arguments and threshold,
    and, when the fit runs on a ``CarvanaDataModule``, its size and split (else None).

    Raises (in ``setup``):
        ConfigError: a checkpoint callback saving weights only: Lightning leaves callbacks out of
            such checkpoints, so they would lack the record.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_weights_only:
                raise ConfigError(
                    f"A checkpoint callback saves weights only (save_weights_only=true, into "
                    f"{callback.dirpath}): its checkpoints would lack carseg's record (the "
                    "training size and split by car that predict.py and eval.py read). Set "
                    "save_weights_only=false in conf/callbacks"
                )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        data = trainer.datamodule
        if isinstance(data, CarvanaDataModule):
            record = CheckpointRecord.of(pl_module, data.size, data.split)
        else:
            record = CheckpointRecord.of(pl_module, None, None)
        checkpoint[RECORD_KEY] = record.to_dict()
