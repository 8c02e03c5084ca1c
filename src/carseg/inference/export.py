"""Export a trained network for serving: ONNX (run by ONNX Runtime) or TorchScript.

Both take normalised images ``(B, 3, H, W)`` of any batch size and any height and width (the
networks pad internally) and return logits ``(B, 1, H, W)``. The ONNX file carries the checkpoint's
record (training size, threshold, split, the model's construction) in its metadata, so
``predict.py onnx_path=...`` and ``eval.py onnx_path=...`` need nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from carseg.inference.loading import ONNX_METADATA_KEY, OnnxNet
from carseg.training.checkpoint_reader import CheckpointRecord
from carseg.utils.atomic import atomic_file
from carseg.utils.checks import MAX_SIDE
from carseg.utils.errors import ConfigError, DataError

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXAMPLE_SIZE = (320, 480)  # the example input's size when the checkpoint records none


def export_onnx(model: nn.Module, record: CheckpointRecord, path: Path, opset: int = 18) -> Path:
    """Write ``model`` as ONNX with dynamic batch, height and width (the torch.export exporter)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "ONNX export needs onnx and onnxscript: pip install -e '.[onnx]'"
        ) from None
    net = _plain(model)
    # only the example's size (the axes stay dynamic), padded as the network pads it (its frame,
    # carseg.models.frame): torch.export traces the padding of a size that needs some badly
    height, width = net.padded_size(*(record.size or EXAMPLE_SIZE))
    example = torch.randn(1, 3, height, width)
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=8, max=MAX_SIDE),  # the frame refuses larger sides
        3: torch.export.Dim("width", min=8, max=MAX_SIDE),
    }
    program = torch.onnx.export(
        net,
        (example,),
        dynamo=True,
        dynamic_shapes=(dims,),
        input_names=["images"],
        output_names=["logits"],
        opset_version=opset,
        verbose=False,
    )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(record.to_dict())
    with atomic_file(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def _plain(model: nn.Module) -> nn.Module:
    """The bare network, in eval mode on the CPU, its weights in the usual (NCHW) layout: an
    exported graph takes any layout of input, whatever layout training ran in."""
    net = model.net if hasattr(model, "net") else model
    return net.eval().to(device="cpu", memory_format=torch.contiguous_format)


def export_torchscript(model: nn.Module, path: Path) -> Path:
    """Write ``model`` as a scripted TorchScript module (``torch.jit.load`` reads it)."""
    scripted = torch.jit.script(_plain(model))
    with atomic_file(path) as tmp:
        scripted.save(str(tmp))
    return path


def load_torchscript(path: str | Path) -> nn.Module:
    return torch.jit.load(str(path), map_location="cpu").eval()


@torch.no_grad()
def parity(reference: nn.Module, exported: nn.Module, sizes: list[tuple[int, int]]) -> float:
    """Max absolute difference of logits between two networks on random images of ``sizes``
    (the same images every time).

    Raises:
        DataError: either network's logits hold NaN or infinity (a difference with NaN is no
            parity: ``max(0, nan)`` would report 0).
    """
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, (height, width) in enumerate(sizes, start=1):
        images = torch.randn(batch, 3, height, width, generator=generator)
        for name, net in (("the checkpoint's", reference), ("the exported", exported)):
            logits = net(images).float()
            if not bool(torch.isfinite(logits).all()):
                raise DataError(
                    f"{name} model's logits hold NaN or infinity on {batch}x3x{height}x{width} "
                    "random images: nothing to serve. Export a checkpoint of a run that did not "
                    "diverge"
                )
        diff = (reference(images).float() - exported(images).float()).abs().max().item()
        worst = max(worst, float(diff))
    return worst


def export(model: nn.Module, record: CheckpointRecord, path: Path, fmt: str) -> tuple[Path, float]:
    """Export in ``fmt`` and check it: returns the file and the max abs logit difference against
    eager PyTorch at the training size (batch 1) and at an odd size (batch 2)."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        export_onnx(model, record, path)
        exported = OnnxNet(path)
    else:
        export_torchscript(model, path)
        exported = load_torchscript(path)
    height, width = record.size or EXAMPLE_SIZE
    odd = (height + 7, width - 5)  # not multiples of the net's multiple: the padding path
    diff = parity(_plain(model), exported, [(height, width), odd])
    return path, diff
