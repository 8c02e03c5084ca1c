"""Pictures of masks, in one colour scheme: TensorBoard's grid, eval's gallery, predict's overlays.

The scheme: the prediction is tinted ``PREDICTION`` (magenta), the true mask is outlined in
``TRUTH`` (green). In an error map, car that only the prediction has (false car) is ``PREDICTION``,
car that only the truth has (missed car) is ``TRUTH``, and car both agree on is grey. Change a
colour here and every picture follows. numpy and Pillow only: training's TensorBoard grid and
inference's pictures both draw here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

PREDICTION = (255, 0, 255)  # magenta: the predicted car, and false car in error maps
TRUTH = (0, 255, 0)  # green: the true mask's outline, and missed car in error maps
AGREEMENT = (170, 170, 170)  # grey: car in both, in error maps
ALPHA = 0.45  # opacity of the prediction's tint
ERROR_LEGEND = "magenta: false car, green: missed car, grey: both"


def mask_contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` (bool ``(H, W)``) within ``width`` pixels of its edge.

    A pixel is on the contour when it is in the mask and one of its 4-neighbours, after
    ``width - 1`` erosions, is not (the image border counts as outside).
    """
    inside = mask.astype(bool)
    eroded = inside
    for _ in range(max(1, width)):
        padded = np.pad(eroded, 1, constant_values=False)
        eroded = (
            padded[1:-1, 1:-1]
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
    return inside & ~eroded


def overlay(
    image: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None = None,
    contour_width: int = 1,
) -> np.ndarray:
    """The image with the prediction tinted and, if given, the true mask's outline over it.

    Read it as: tint outside the outline is false car, untinted car inside it is missed car.

    Args:
        image: ``uint8`` RGB ``(H, W, 3)``.
        pred: the predicted mask, bool or {0, 1} ``(H, W)``.
        truth: the true mask, bool or {0, 1} ``(H, W)``, or None.
        contour_width: the outline's thickness in pixels.

    Returns:
        ``uint8`` RGB ``(H, W, 3)``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    masks = [pred] if truth is None else [pred, truth]
    if any(m.shape != image.shape[:2] for m in masks):
        raise ValueError(
            f"masks {[m.shape for m in masks]} must match the image's {image.shape[:2]}"
        )
    out = image.astype(np.float32)
    tinted = pred.astype(bool)
    out[tinted] = (1 - ALPHA) * out[tinted] + ALPHA * np.asarray(PREDICTION, np.float32)
    if truth is not None:
        out[mask_contour(truth, contour_width)] = TRUTH
    return out.round().astype(np.uint8)


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)``: car in both grey, false car magenta, missed car green."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    out = np.zeros((*truth.shape, 3), dtype=np.uint8)
    out[truth & pred] = AGREEMENT
    out[~truth & pred] = PREDICTION
    out[truth & ~pred] = TRUTH
    return out


def image_grid(panels: Sequence[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Panels ``(H, W, 3)`` of one size in rows of ``columns``, on white, ``pad`` pixels apart."""
    if not panels:
        raise ValueError("image_grid needs at least one panel")
    h, w = panels[0].shape[:2]
    if any(p.shape != panels[0].shape for p in panels):
        raise ValueError("image_grid: every panel must have the same shape")
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = panel
    return grid


def resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    """An image (bilinear) or a mask (``nearest``) resized for display."""
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))
