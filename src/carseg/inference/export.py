"""Export a trained U-Net for serving: ONNX (run by ONNX Runtime) or TorchScript.

Both take normalised images ``(B, 3, H, W)`` of any batch size and any height and width (the U-Net
pads internally) and return logits ``(B, 1, H, W)``. The ONNX file carries the training size and
threshold in its metadata, so ``predict.py onnx_path=...`` needs nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from carseg.utils.atomic import atomic_file
from carseg.training.checkpoint_io import ModelInfo
from carseg.utils.errors import ConfigError
from carseg.inference.predictor import Forward, onnx_forward, torch_forward

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "carseg"


def export_onnx(model: torch.nn.Module, info: ModelInfo, path: Path, opset: int = 18) -> Path:
    """Write ``model`` as ONNX with dynamic batch, height and width (the torch.export exporter)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "ONNX export needs onnx and onnxscript: pip install -e '.[onnx]'"
        ) from None
    net = _plain(model)
    height, width = info.size or (320, 480)  # only the example's size: the axes stay dynamic
    example = torch.randn(1, 3, height, width)
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=8, max=8192),
        3: torch.export.Dim("width", min=8, max=8192),
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
    size = list(info.size) if info.size else None
    meta = {"size": size, "threshold": info.threshold, "hparams": info.hparams}
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    with atomic_file(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    """The bare U-Net, in eval mode on the CPU, its weights in the usual (NCHW) layout: an
    exported graph takes any layout of input, whatever layout training ran in."""
    net = model.net if hasattr(model, "net") else model
    return net.eval().to(device="cpu", memory_format=torch.contiguous_format)


def onnx_metadata(path: str | Path) -> dict:
    """The training size, threshold and hyperparameters stored in an exported ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ConfigError(f"{path} has no carseg metadata: was it exported by src/export.py?")


def export_torchscript(model: torch.nn.Module, path: Path) -> Path:
    """Write ``model`` as a scripted TorchScript module (``torch.jit.load`` reads it)."""
    scripted = torch.jit.script(_plain(model))
    with atomic_file(path) as tmp:
        scripted.save(str(tmp))
    return path


def torchscript_forward(path: str | Path) -> Forward:
    module = torch.jit.load(str(path), map_location="cpu").eval()
    return torch_forward(module)


def parity(
    reference: Forward, exported: Forward, sizes: list[tuple[int, int]], seed: int = 0
) -> float:
    """Max absolute difference of logits between two forwards on random images of ``sizes``."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch, (height, width) in enumerate(sizes, start=1):
        images = torch.randn(batch, 3, height, width, generator=generator)
        diff = (reference(images) - exported(images)).abs().max().item()
        worst = max(worst, float(diff))
    return worst


def export(model: torch.nn.Module, info: ModelInfo, path: Path, fmt: str) -> tuple[Path, float]:
    """Export in ``fmt`` and check it: returns the file and the max abs logit difference against
    eager PyTorch at the training size (batch 1) and at an odd size (batch 2)."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        export_onnx(model, info, path)
        exported = onnx_forward(path)
    else:
        export_torchscript(model, path)
        exported = torchscript_forward(path)
    height, width = info.size or (320, 480)
    odd = (height + 7, width - 5)  # not multiples of 2**depth: exercises the padding path
    diff = parity(torch_forward(model), exported, [(height, width), odd])
    return path, diff
