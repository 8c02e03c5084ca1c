"""carseg's record in every checkpoint a run saves: the model's construction and threshold, and
what the data module trained it on (the size, the split by car), so that predicting and
evaluating from the checkpoint alone feed the right size and score the cars it never saw.

The record is ``carseg.training.checkpoint_reader.CheckpointRecord``, stored under its own key
(``RECORD_KEY``) and read back by ``CheckpointRecord.from_checkpoint``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from carseg.data.datamodule import CarvanaDataModule
from carseg.training.checkpoint_reader import RECORD_KEY, CheckpointRecord
from carseg.utils.checks import check_bool, check_int, check_positive
from carseg.utils.errors import ConfigError

REFINE_KEYS = ("guided", "radius", "eps")  # carseg.inference.refine.Refine's options


class CheckpointRecorder(pl.Callback):
    """Write ``CheckpointRecord`` into every checkpoint: the module's arguments and threshold,
    and, when the fit runs on a ``CarvanaDataModule``, its size and split (else None).

    Args:
        refine: the edge option its recipe was measured best with (the config's ``refine``:
            guided, radius, eps), which inference applies unless told otherwise; None: none.

    Raises:
        ConfigError: (at once) ``refine`` is not a group of guided, radius and eps with valid
            values; (in ``setup``) a checkpoint callback saving weights only: Lightning leaves
            callbacks out of such checkpoints, so they would lack the record.
    """

    def __init__(self, refine: Mapping[str, Any] | None) -> None:
        self.refine = check_refine(refine)

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
            record = CheckpointRecord.of(pl_module, data.size, data.split, self.refine)
        else:
            record = CheckpointRecord.of(pl_module, None, None, self.refine)
        checkpoint[RECORD_KEY] = record.to_dict()


def check_refine(refine: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A training config's ``refine`` as inference will read it: None when off (or not given),
    else its options (radius and eps may be null: inference's own)."""
    if refine is None:
        return None
    if not isinstance(refine, Mapping) or sorted(refine) != sorted(REFINE_KEYS):
        raise ConfigError(
            f"refine={refine!r}: a recipe records the edge option as a group of "
            "guided, radius and eps (refine.guided=true refine.radius=2 refine.eps=1e-3)"
        )
    if not check_bool("refine.guided", refine["guided"]):
        return None
    radius, eps = refine["radius"], refine["eps"]
    return {
        "guided": True,
        "radius": None if radius is None else check_int("refine.radius", radius, 1),
        "eps": None if eps is None else check_positive("refine.eps", eps),
    }
