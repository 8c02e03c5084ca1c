"""Predict masks at the original image size from a trained model or an exported ONNX model.

The model sees each image resized to its training size; its probabilities are upsampled
(bilinear) back to the image's own size *before* thresholding, as Kaggle scored masks at 1918x1280.
Test-time augmentation averages the probabilities of the image and of its mirror image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from carseg.utils.checks import check_int, check_size
from carseg.utils.errors import ConfigError
from carseg.data.transforms import build_transforms

log = logging.getLogger(__name__)

# A forward pass: normalised images (B, 3, H, W) -> logits (B, 1, H, W), both float32 on the CPU.
Forward = Callable[[torch.Tensor], torch.Tensor]


def torch_forward(model: torch.nn.Module, device: str = "cpu") -> Forward:
    """A ``Forward`` over a PyTorch model, without gradients."""

    @torch.no_grad()
    def forward(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(device)).float().cpu()

    return forward


def onnx_forward(path: str | Path) -> Forward:
    """A ``Forward`` over an exported ONNX model, run by ONNX Runtime on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "Running an ONNX model needs onnxruntime: pip install -e '.[onnx]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def forward(images: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {input_name: images.numpy()})
        return torch.from_numpy(logits)

    return forward


def input_size(recorded: Sequence[int] | None, override: Sequence[int] | None) -> tuple[int, int]:
    """The size to feed the model: ``override`` if given, else the one its checkpoint recorded.

    A model fed another size than it was trained at loses most of its Dice, so there is no guess.
    """
    if override:
        return check_size("size", list(override))
    if not recorded:
        raise ConfigError(
            "The checkpoint does not record the image size it was trained at: "
            "give it as size=[height,width]"
        )
    return check_size("size", list(recorded))


class ModelInput:
    """A uint8 RGB image ``(H, W, 3)`` as the model's input ``(3, h, w)``: resized to the model's
    size (unless it has it already) and normalised, as in training."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.resize = build_transforms(self.size)
        self.normalise = build_transforms(self.size, resize=False)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        transform = self.normalise if image.shape[:2] == self.size else self.resize
        return transform(image=image)["image"]


class Predictor:
    """Probabilities at each image's original size.

    Each image is resized to the model's size (no resize when it already has it), run through the
    model whole, or in overlapping tiles when ``tile`` is given, and its probabilities are
    resized back (bilinear) to the image's own size.

    Args:
        forward: the model (``torch_forward`` or ``onnx_forward``).
        size: (height, width) the model expects (its training size).
        tta: also predict the mirror image and average the probabilities.
        tile: (height, width) of the tiles a frame is predicted in, for frames that do not fit
            the device's memory whole; None: whole frames.
        tile_overlap: pixels neighbouring tiles share; their probabilities are blended there with
            a raised-cosine window, so no seam shows.
    """

    def __init__(
        self,
        forward: Forward,
        size: Sequence[int],
        tta: bool = False,
        tile: Sequence[int] | None = None,
        tile_overlap: int = 64,
    ) -> None:
        self.forward = forward
        self.size = (int(size[0]), int(size[1]))
        self.tta = tta
        self.tile = None if tile is None else check_size("tile", list(tile))
        if self.tile is not None:
            check_int("tile_overlap", tile_overlap, 0)
            if tile_overlap >= min(self.tile):
                raise ConfigError(
                    f"tile_overlap={tile_overlap} must be smaller than the tile {list(self.tile)}"
                )
        self.tile_overlap = tile_overlap
        self.prepare = ModelInput(self.size)

    def model_probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, 1, h, w)`` at the model's size of prepared images ``(B, 3, h, w)``,
        on the device ``forward`` returns them on."""
        probs = self._probabilities(batch)
        if self.tta:
            probs = (probs + self._probabilities(batch.flip(-1)).flip(-1)) / 2
        return probs

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Car probability maps, float32 ``(H_i, W_i)``, for uint8 RGB images ``(H_i, W_i, 3)``."""
        probs = self.model_probabilities(torch.stack([self.prepare(image) for image in images]))
        return [
            at_size(p, image.shape[:2]).cpu().numpy()
            for p, image in zip(probs, images, strict=True)
        ]

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        if self.tile is None:
            return torch.sigmoid(self.forward(batch))
        return tiled_probabilities(self.forward, batch, self.tile, self.tile_overlap)


def at_size(probs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Probabilities ``(1, h, w)`` resized (bilinear) to ``size`` (H, W): ``(H, W)``; not
    resized when they have it. Bilinear probabilities, thresholded after, put the car's edge
    between the model's pixels, as Kaggle scored masks at the photo's own size."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs[0]
    return F.interpolate(probs[None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``length``, ``tile - overlap`` apart, the last flush with the end."""
    if tile >= length:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def _window(length: int, overlap: int) -> torch.Tensor:
    """1 in the middle, rising along a raised cosine over ``overlap`` pixels at each end (never
    quite 0, so that a pixel only one tile covers keeps its prediction)."""
    weights = torch.ones(length)
    if overlap > 0:
        ramp = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[length - overlap :] = torch.minimum(weights[length - overlap :], ramp.flip(0))
    return weights.clamp_min(1e-3)


def tiled_probabilities(
    forward: Forward, batch: torch.Tensor, tile: Sequence[int], overlap: int
) -> torch.Tensor:
    """Probabilities ``(B, 1, H, W)`` of normalised images ``(B, 3, H, W)``, predicted tile by
    tile (``tile`` = (height, width)) and blended where tiles overlap."""
    _, _, height, width = batch.shape
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    window = (
        _window(tile_h, min(overlap, tile_h - 1))[:, None]
        * _window(tile_w, min(overlap, tile_w - 1))[None, :]
    )
    total = weight = None  # made on the device the model answers on (a GPU's, or the CPU)
    for top in _starts(height, tile_h, overlap):
        for left in _starts(width, tile_w, overlap):
            crop = batch[..., top : top + tile_h, left : left + tile_w]
            probs = torch.sigmoid(forward(crop.contiguous()))
            if total is None:
                window = window.to(probs.device)
                total = probs.new_zeros(batch.shape[0], 1, height, width)
                weight = probs.new_zeros(1, 1, height, width)
            total[..., top : top + tile_h, left : left + tile_w] += probs * window
            weight[..., top : top + tile_h, left : left + tile_w] += window
    return total / weight


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    check_int("batch_size", size, 1)
    for start in range(0, len(items), size):
        yield items[start : start + size]
