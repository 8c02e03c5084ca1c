"""Checkpoints read safely, and what carseg records in them for inference.

- ``read_checkpoint``: ``torch.load(weights_only=True)`` (``carseg.utils.torch_files``), so a file
  carrying pickled code is refused without being run, and weights holding NaN or infinity are
  refused; every checkpoint carseg or Lightning loads goes through it.
- ``CheckpointRecord``: what inference needs (the model's construction, the training size, the
  threshold, the split by car), written under carseg's own key, ``RECORD_KEY``, by
  ``SegmentationModule.on_save_checkpoint`` and read back by that key. Checkpoints written before
  the record (carseg 7cf3056 and earlier) are read from where Lightning kept those values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carseg.data.split import SplitRecord
from carseg.utils.errors import DataError, DataNotFoundError, first_line
from carseg.utils.torch_files import check_finite, read_torch_file

RECORD_KEY = "carseg"
RECORD_FORMAT = 1


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's content, read by carseg's one safe reader (``read_torch_file``: tensors and
    plain values only), its weights checked finite.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: not a PyTorch checkpoint, one carrying pickled objects (refused unread), or
            one whose weights hold NaN or infinity.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a checkpoint file (checkpoints end in .ckpt)")
    if not path.is_file():
        raise DataNotFoundError(f"Checkpoint not found: {path}")
    raw = read_torch_file(path, "checkpoint")
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a training checkpoint (it holds a {type(raw).__name__})")
    if isinstance(raw.get("state_dict"), Mapping):
        check_finite(
            raw["state_dict"],
            str(path),
            "The run that wrote it diverged or the file is damaged: use an earlier checkpoint",
        )
    return raw


@dataclass(frozen=True)
class CheckpointRecord:
    """What inference needs to know of a trained model, read from its checkpoint."""

    model: dict[str, Any]  # SegmentationModule's arguments: the net's, loss's ... nodes
    size: tuple[int, int] | None  # (height, width) it was trained at; None if not recorded
    threshold: float
    split: SplitRecord | None  # its split by car; None for checkpoints older than the record

    @classmethod
    def of(cls, module: Any, datamodule: Any = None) -> CheckpointRecord:
        """The record of a ``SegmentationModule`` trained on ``datamodule`` (any object with
        ``size`` and ``split``; None when the fit had no data module)."""
        size = getattr(datamodule, "size", None)
        return cls(
            model=dict(module.hparams),
            size=(int(size[0]), int(size[1])) if size else None,
            threshold=float(module.hparams.threshold),
            split=getattr(datamodule, "split", None),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as the checkpoint stores them."""
        return {
            "format": RECORD_FORMAT,
            "model": self.model,
            "size": list(self.size) if self.size else None,
            "threshold": self.threshold,
            "split": self.split.to_dict() if self.split is not None else None,
        }

    @classmethod
    def from_checkpoint(cls, raw: Mapping[str, Any], path: str | Path) -> CheckpointRecord:
        """The record of a checkpoint's content (``read_checkpoint``).

        Raises:
            DataError: not a carseg training checkpoint.
        """
        if RECORD_KEY in raw:
            record = raw[RECORD_KEY]
            try:
                size = record.get("size")
                return cls(
                    model=dict(record["model"]),
                    size=(int(size[0]), int(size[1])) if size else None,
                    threshold=float(record["threshold"]),
                    split=SplitRecord.from_dict(record["split"]) if record.get("split") else None,
                )
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise DataError(
                    f"{path}: its carseg record is damaged ({first_line(err)})"
                ) from None
        if "state_dict" not in raw or "hyper_parameters" not in raw:
            raise DataError(
                f"{path} is not a carseg training checkpoint (no state_dict/hyper_parameters)"
            )
        try:
            return _before_the_record(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(
                f"{path} does not fit this version's SegmentationModule (another model config?): "
                f"no {first_line(err)} in its hyper_parameters"
            ) from None


# The U-Net's arguments in checkpoints written before the record, when they were flat.
_LEGACY_NET = ("in_channels", "base_width", "depth", "bilinear", "batch_norm")
_LEGACY_LOSS = {
    "bce": "carseg.models.losses.BCE",
    "bce_dice": "carseg.models.losses.BCEDice",
    "bce_logdice": "carseg.models.losses.BCELogDice",
}


def _before_the_record(raw: Mapping[str, Any]) -> CheckpointRecord:
    """A record from a checkpoint of carseg 7cf3056 or earlier: flat U-Net hyperparameters, the
    size in Lightning's ``datamodule_hyper_parameters``, the split in the data module's state
    (stored under its class's name)."""
    flat = dict(raw["hyper_parameters"])
    loss = {"_target_": _LEGACY_LOSS.get(flat.get("loss", "bce"), _LEGACY_LOSS["bce"])}
    if loss["_target_"] != _LEGACY_LOSS["bce"]:
        loss["dice_weight"] = flat.get("dice_weight", 1.0)
    model = {
        "net": {"_target_": "carseg.models.unet.UNet", **{k: flat[k] for k in _LEGACY_NET}},
        "optimizer": {
            "_target_": "torch.optim.Adam",
            "lr": flat.get("lr", 1e-4),
            "weight_decay": flat.get("weight_decay", 0.0),
        },
        "scheduler": {},
        "loss": loss,
        "threshold": float(flat.get("threshold", 0.5)),
        "channels_last": flat.get("channels_last", "auto"),
        "compile": bool(flat.get("compile", False)),
    }
    size = (raw.get("datamodule_hyper_parameters") or {}).get("size")
    split = (raw.get("CarvanaDataModule") or {}).get("split")
    return CheckpointRecord(
        model=model,
        size=(int(size[0]), int(size[1])) if size else None,
        threshold=model["threshold"],
        split=SplitRecord.from_dict(split) if split else None,
    )
