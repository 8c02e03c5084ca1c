"""Trained models for inference, from their files: a training checkpoint (the model rebuilt from
its own record, ``carseg.training.checkpoint_reader``) or an ONNX model written by ``export.py``.

Either way the result is a ``TrainedModel``: a network (images to logits, an ``nn.Module``), the
size it was trained at, its threshold and its split by car, which is all ``Predictor`` and
evaluation need.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from carseg.data.split import SplitRecord
from carseg.models.registry import as_trained
from carseg.training.checkpoint_reader import RECORD_KEY, CheckpointRecord, read_checkpoint
from carseg.training.segmentation_module import SegmentationModule
from carseg.utils.errors import CarsegError, ConfigError, DataError, DataNotFoundError, first_line

ONNX_METADATA_KEY = RECORD_KEY  # an ONNX file keeps the record under the checkpoint's key


@dataclass(frozen=True)
class TrainedModel:
    """A network ready for inference and what its file recorded of its training."""

    net: nn.Module  # images (B, 3, h, w), normalised -> logits (B, 1, h, w)
    size: tuple[int, int] | None  # the training size; None if not recorded
    threshold: float
    split: SplitRecord | None
    path: Path
    refine: dict[str, Any] | None  # the edge option its recipe recorded; None: none


def load_model(
    path: str | Path, device: str = "cpu"
) -> tuple[SegmentationModule, CheckpointRecord]:
    """The trained ``SegmentationModule`` in eval mode on ``device``, and its checkpoint's record.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: the file is not a carseg checkpoint, or does not fit this version's model.
        ConfigError: its network is not one carseg builds (nor trusted by the command).
    """
    path = Path(path).expanduser()
    raw = read_checkpoint(path)
    record = CheckpointRecord.from_checkpoint(raw, path)
    # The network alone (no loss, optimiser nor schedule is built from the checkpoint), and not
    # from an ImageNet file or a download again: the checkpoint holds the weights.
    settings = {**record.model, "net": as_trained(record.model["net"]), "inference": True}
    try:
        model = SegmentationModule(**settings)
        weights = raw["state_dict"]  # (less a loss's buffers, were a loss to have some)
        model.load_state_dict({k: v for k, v in weights.items() if not k.startswith("criterion.")})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (TypeError, RuntimeError, KeyError, CarsegError) as err:
        raise DataError(
            f"{path} does not fit this version's SegmentationModule (another model config?): "
            f"{first_line(err)}"
        ) from None
    model.eval().place_on(device)
    return model, record


class OnnxNet(nn.Module):
    """An exported ONNX model run by ONNX Runtime on the CPU, as a module: logits of images.

    Raises (on construction):
        ConfigError: onnxruntime is not installed.
        DataNotFoundError, DataError: no file, or not a loadable ONNX model.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(
                "Running an ONNX model needs onnxruntime: pip install -e '.[onnx]'"
            ) from None
        self.path = _existing_file(path, "ONNX model")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own errors (InvalidProtobuf, Fail ...)
            raise DataError(
                f"{self.path} is not an ONNX model ONNX Runtime can load ({first_line(err)}): "
                "export one with src/export.py format=onnx"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits).to(images.device)

    def __getstate__(self) -> dict[str, Any]:  # ONNX Runtime sessions do not pickle
        raise TypeError("OnnxNet does not pickle: load it in each process")


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The record stored in an exported ONNX file, as plain values (``CheckpointRecord.to_dict``).

    Raises:
        ConfigError: onnx is not installed, or the file has no carseg metadata.
        DataNotFoundError, DataError: no file, or not an ONNX file.
    """
    try:
        import onnx
    except ImportError:
        raise ConfigError("Reading an ONNX model needs onnx: pip install -e '.[onnx]'") from None
    path = _existing_file(path, "ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and the like
        raise DataError(
            f"{path} is not an ONNX file ({type(err).__name__}: {first_line(err)}): export one "
            "with src/export.py format=onnx"
        ) from None
    for entry in proto.metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            try:
                return json.loads(entry.value)
            except json.JSONDecodeError:
                break
    raise ConfigError(f"{path} has no carseg metadata: was it exported by src/export.py?")


def onnx_record(path: str | Path) -> CheckpointRecord:
    """The checkpoint's record that ``export.py`` stored in an ONNX file's metadata, read as a
    checkpoint's is (``CheckpointRecord.from_dict``).

    Raises:
        ConfigError: onnx is not installed, or the file has no carseg metadata.
        DataNotFoundError, DataError: no file, not an ONNX file, or a damaged record.
    """
    return CheckpointRecord.from_dict(onnx_metadata(path), Path(path).expanduser())


def load_onnx(path: str | Path) -> TrainedModel:
    """An exported ONNX model and the record ``export.py`` stored in its metadata."""
    record = onnx_record(path)
    return TrainedModel(
        OnnxNet(path),
        record.size,
        record.threshold,
        record.split,
        Path(path).expanduser(),
        record.refine,
    )


def load_checkpoint_model(path: str | Path) -> TrainedModel:
    """A training checkpoint's model (on the CPU: the predict loop moves it)."""
    model, record = load_model(path)
    return TrainedModel(
        model, record.size, record.threshold, record.split, Path(path).expanduser(), record.refine
    )


def load_models(
    ckpt_path: str | Sequence[str] | None, onnx_path: str | Sequence[str] | None
) -> list[TrainedModel]:
    """The model(s) a command names: checkpoints, ONNX files, or several of either (an ensemble).

    Args:
        ckpt_path: a checkpoint, or a list of them.
        onnx_path: an ONNX model, or a list of them.

    Raises:
        ConfigError: neither or both given, or one file listed twice.
    """
    checkpoints, onnx_files = _paths(ckpt_path, "ckpt_path"), _paths(onnx_path, "onnx_path")
    if bool(checkpoints) == bool(onnx_files):
        raise ConfigError(
            "give the model: ckpt_path=<checkpoint> or onnx_path=<model.onnx> (one, or a list "
            "of either for an ensemble: ckpt_path=[a.ckpt,b.ckpt])"
        )
    for key, paths in (("ckpt_path", checkpoints), ("onnx_path", onnx_files)):
        seen: dict[Path, str] = {}
        for path in paths:
            same = seen.setdefault(Path(path).expanduser().resolve(), path)
            if same is not path:
                raise ConfigError(
                    f"{key} lists {path} twice ({same}): an ensemble would weigh it twice. "
                    "List each model once"
                )
    return [load_checkpoint_model(p) for p in checkpoints] + [load_onnx(p) for p in onnx_files]


def _paths(value: str | Sequence[str] | None, key: str) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str | Path):
        return [str(value)]
    if isinstance(value, Sequence) and all(isinstance(v, str | Path) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{key} must be a file or a list of files, got {value!r}")


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise DataNotFoundError(f"{what} not found: {path}")
    return path
