"""Checkpoints read safely, and what carseg records in them for inference.

- ``read_checkpoint``: ``torch.load(weights_only=True)`` (``carseg.utils.torch_files``), so a file
  carrying pickled code is refused without being run, and weights holding NaN or infinity are
  refused; every checkpoint carseg or Lightning loads goes through it.
- ``CheckpointRecord``: what inference needs (the model's construction, the training size, the
  threshold, the split by car), written under carseg's own key, ``RECORD_KEY``, by the training
  callback ``carseg.training.callbacks.record.CheckpointRecorder``, and into an exported ONNX
  file's metadata (``carseg.inference.export``); read back from either by ``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    """What inference needs to know of a trained model, read from its checkpoint or ONNX file."""

    model: dict[str, Any]  # SegmentationModule's arguments: the net's, loss's ... nodes
    size: tuple[int, int] | None  # (height, width) it was trained at; None if not recorded
    threshold: float
    split: SplitRecord | None  # its split by car; None when it trained without a data module
    # the edge option its recipe was measured best with (``refine``: guided, radius, eps), which
    # eval, predict and serve apply unless told otherwise; None: none recorded (off)
    refine: dict[str, Any] | None

    @classmethod
    def of(
        cls,
        module: Any,
        size: Sequence[int] | None,
        split: SplitRecord | None,
        refine: Mapping[str, Any] | None,
    ) -> CheckpointRecord:
        """The record of a ``SegmentationModule`` trained at ``size`` on the split ``split``
        (both None when the fit had no data module to say), with its recipe's ``refine``."""
        return cls(
            model=dict(module.hparams),
            size=(int(size[0]), int(size[1])) if size else None,
            threshold=float(module.hparams.threshold),
            split=split,
            refine=dict(refine) if refine else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as the checkpoint and the ONNX metadata store them."""
        return {
            "format": RECORD_FORMAT,
            "model": self.model,
            "size": list(self.size) if self.size else None,
            "threshold": self.threshold,
            "split": self.split.to_dict() if self.split is not None else None,
            "refine": self.refine,
        }

    @classmethod
    def from_dict(cls, record: Any, source: str | Path) -> CheckpointRecord:
        """The record ``to_dict`` wrote, read back from ``source`` (a checkpoint or an ONNX
        file, named in the error).

        Raises:
            DataError: a damaged record.
        """
        try:
            size = record.get("size")
            return cls(
                model=dict(record["model"]),
                size=(int(size[0]), int(size[1])) if size else None,
                threshold=float(record["threshold"]),
                split=SplitRecord.from_dict(record["split"]) if record.get("split") else None,
                refine=dict(record["refine"]) if record.get("refine") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{source}: its carseg record is damaged ({first_line(err)})") from None

    @classmethod
    def from_checkpoint(cls, raw: Mapping[str, Any], path: str | Path) -> CheckpointRecord:
        """The record of a checkpoint's content (``read_checkpoint``).

        A checkpoint Lightning saved without carseg's recorder (``save_checkpoint(path,
        weights_only=True)``, or a Trainer built outside ``carseg.training.train``) holds the
        model's arguments in Lightning's ``hyper_parameters`` alone: its model is read from
        there, with no training size nor split.

        Raises:
            DataError: not a carseg training checkpoint, or a damaged record.
        """
        if RECORD_KEY in raw:
            return cls.from_dict(raw[RECORD_KEY], path)
        hparams = raw.get("hyper_parameters")
        if "state_dict" not in raw or not isinstance(hparams, Mapping):
            raise DataError(
                f"{path} is not a carseg training checkpoint (no carseg record, nor "
                "state_dict/hyper_parameters)"
            )
        missing = [key for key in ("net", "threshold") if key not in hparams]
        if missing:
            raise DataError(
                f"{path} does not fit this version's SegmentationModule (another model config?): "
                f"no {missing[0]!r} in its hyper_parameters"
            )
        return cls.from_dict({"model": hparams, "threshold": hparams["threshold"]}, path)
