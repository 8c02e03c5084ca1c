"""Checkpoints written atomically: Lightning's checkpoint I/O plugin for carseg's runs.

``AtomicCheckpointIO`` writes each checkpoint to a temporary file in the same folder and renames it
into place, so a kill while writing keeps the previous file whole; a full disk is named as such.
It reads through ``carseg.training.checkpoint_reader.read_checkpoint``, so whatever checkpoint
Lightning loads by itself (a resume, the checkpoint of a SLURM requeue) is loaded safely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from carseg.training.checkpoint_reader import read_checkpoint
from carseg.utils.atomic import atomic_file
from carseg.utils.errors import DiskFullError, free_space, is_disk_full


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A run killed while writing leaves the previous ``last.ckpt`` whole (a rename within a folder is
    atomic; Lightning's own writer stages in the system's temporary folder, which may be another
    file system, where the final move is a copy). A full disk stops the run with a message that
    says so, where torch would report a failed "file write" of an inner record.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        try:
            with atomic_file(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:
            if is_disk_full(err, path.parent):
                raise DiskFullError(
                    f"No space left on the device while writing {path}{free_space(path)}. "
                    "The previous checkpoint is kept. Free some space, or send runs elsewhere "
                    "with paths.log_dir=<folder on another disk>"
                ) from None
            raise

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """``read_checkpoint``: tensors and plain values only, whatever the caller asks."""
        return read_checkpoint(path)
