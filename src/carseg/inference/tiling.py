"""Frames too large for the device's memory, predicted in overlapping tiles blended with a
raised-cosine window, so no seam shows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


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
    forward: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    tile: Sequence[int],
    overlap: int,
) -> torch.Tensor:
    """Probabilities ``(B, 1, H, W)`` of normalised images ``(B, 3, H, W)``, predicted tile by
    tile (``tile`` = (height, width)) by ``forward`` (images to logits) and blended where tiles
    overlap."""
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
            probs = torch.sigmoid(forward(crop.contiguous()).float())
            if total is None:
                window = window.to(probs.device)
                total = probs.new_zeros(batch.shape[0], 1, height, width)
                weight = probs.new_zeros(1, 1, height, width)
            total[..., top : top + tile_h, left : left + tile_w] += probs * window
            weight[..., top : top + tile_h, left : left + tile_w] += window
    return total / weight
