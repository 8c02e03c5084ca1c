"""The car cut out of its photo, and put on a new background: predict's ``cutouts/`` and
``composites/`` and the server's answers alike.

A cut-out is the photo with the car as its alpha (an RGBA PNG); its edge is the mask's, or with a
feather, soft over the probabilities near the threshold. A composite is that car over a colour or
an image (``background=``), as a JPEG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageColor

from carseg.data.image_io import read_image
from carseg.utils.errors import ConfigError


def parse_background(value: Any) -> tuple[int, int, int] | Path | None:
    """``background=``: None, a colour (a name or ``#rrggbb`` Pillow knows, or ``[r,g,b]``), or
    an image file, which is stretched to each photo's size.

    Raises:
        ConfigError: neither a colour nor an image file that can be read.
    """
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):  # (a ListConfig too)
        channels = list(value)
        if len(channels) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in channels):
            return tuple(channels)
        raise ConfigError(f"background={channels!r}: give three values from 0 to 255")
    text = str(value)
    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        pass
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"background={text!r} is neither a colour (white, #f0f0f0, [240,240,240]) nor an "
            "image file"
        )
    read_image(path)  # refuses a file that is not a readable image, naming it
    return path


def alpha_of(
    mask: np.ndarray, probabilities: np.ndarray | None, feather: float, threshold: float
) -> np.ndarray:
    """A cut-out's alpha ``(H, W)`` uint8, made from the final mask (threshold and
    post-processing applied): the mask itself, or with ``feather`` > 0 a soft edge over the
    probabilities within ``feather`` of ``threshold``, half-way at the threshold, where the
    mask's edge is.

    Whatever the feather, alpha is at least 128 exactly where the mask is car; where
    post-processing changed the thresholded mask (a component removed, a hole filled) it is the
    mask's own 0 or 255, and a soft fringe outside the mask is kept only where it joins the
    mask's car (not around a removed component): the cut-out shows the car the mask shows.
    """
    hard = mask.astype(np.uint8) * 255
    if feather <= 0 or probabilities is None:
        return hard
    car = mask.astype(bool)
    p = probabilities.astype(np.float32) / 255.0  # (stored to 1/255)
    below, above = max(min(feather, threshold), 1e-6), max(min(feather, 1 - threshold), 1e-6)
    soft = np.where(
        p > threshold,
        0.5 + 0.5 * np.clip((p - threshold) / above, 0.0, 1.0),
        0.5 * np.clip(1 - (threshold - p) / below, 0.0, 1.0),
    )
    alpha = (soft * 255).round()
    alpha = np.where(car, np.maximum(alpha, 128), np.minimum(alpha, 127))
    step = 1 / 255  # a pixel this close to the threshold may fall either side of it
    changed = (car & (p < threshold - step)) | (~car & (p > threshold + step))
    alpha = np.where(changed, hard, alpha).astype(np.uint8)
    fringe = ~car & (alpha > 0)
    if fringe.any():  # fringes of the mask's car only
        _, labels = cv2.connectedComponents((car | fringe).astype(np.uint8), connectivity=8)
        alpha[fringe & ~np.isin(labels, np.unique(labels[car]))] = 0
    return alpha


def save_cutout(photo: np.ndarray, alpha: np.ndarray, file: Any) -> None:
    """A cut-out: the photo ``(H, W, 3)`` with ``alpha`` ``(H, W)`` as an RGBA PNG, to a path or
    a binary file object (predict's ``cutouts/`` and the server's answers alike)."""
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(file, format="PNG")


def composite(
    photo: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int] | np.ndarray
) -> np.ndarray:
    """The car of ``photo`` ``(H, W, 3)`` uint8 over ``background``: a colour, or an RGB image
    stretched (bilinear) to the photo's size; ``alpha`` ``(H, W)`` uint8 weighs the photo."""
    if isinstance(background, np.ndarray):
        height, width = photo.shape[:2]
        ground = np.asarray(
            Image.fromarray(background).resize((width, height), Image.Resampling.BILINEAR),
            np.float32,
        )
    else:
        ground = np.broadcast_to(np.float32(background), photo.shape)
    a = alpha[..., None].astype(np.float32) / 255.0
    return (a * photo + (1 - a) * ground).round().astype(np.uint8)


def save_composite(image: np.ndarray, file: Any) -> None:
    """A composite as a JPEG (quality 95), to a path or a binary file object."""
    Image.fromarray(image).save(file, format="JPEG", quality=95)
