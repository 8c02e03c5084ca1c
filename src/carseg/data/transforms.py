"""What happens to an image and its mask between the file and the model (albumentations), and the
one place where images and masks are resized.

Resize to the training size, crop (training, optional), augment the training split (ranges from
``data.augmentation``), normalise with ImageNet's statistics and make tensors. Validation and
inference use the same resize and normalisation without crop and augmentation, so a model always
sees frames at the size it was trained at.

Images are resized with pixel-area averaging (``cv2.INTER_AREA``, the antialiased choice for
shrinking), masks with nearest-neighbour (so they stay binary): ``resize_image`` and
``resize_mask``, which the resized-image cache uses too, and ``A.Resize`` with the same
interpolations in the pipelines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from carseg.utils.image_stats import IMAGENET_MEAN, IMAGENET_STD

IMAGE_INTERPOLATION = cv2.INTER_AREA
MASK_INTERPOLATION = cv2.INTER_NEAREST


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """An image (or a float map) resized to ``size`` (height, width) by pixel-area averaging."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=IMAGE_INTERPOLATION)


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A {0, 1} mask resized to ``size`` (height, width) nearest-neighbour: it stays binary."""
    if tuple(mask.shape[:2]) == tuple(size):
        return mask
    return cv2.resize(mask, (int(size[1]), int(size[0])), interpolation=MASK_INTERPOLATION)


def _resize(size: Sequence[int]) -> A.Resize:
    return A.Resize(
        int(size[0]),
        int(size[1]),
        interpolation=IMAGE_INTERPOLATION,
        mask_interpolation=MASK_INTERPOLATION,
    )


def _to_model() -> list[A.BasicTransform]:
    return [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]


def inference_transforms(size: Sequence[int], *, resize: bool) -> A.Compose:
    """Resize to ``size`` (height, width) unless the images have it (``resize=False``),
    normalise, make tensors: validation and inference."""
    return A.Compose([*([_resize(size)] if resize else []), *_to_model()])


def augmentations(ranges: Mapping[str, Any]) -> list[A.BasicTransform]:
    """The training augmentations of ``data.augmentation``: a horizontal flip, a small affine warp
    and colour jitter, each with its probability ``p`` and its ranges (a missing entry: none).

    Masks are warped nearest-neighbour (albumentations' default for masks) and filled with 0 (no
    car) where the warp leaves the frame, as the image is filled with black.
    """
    steps: list[A.BasicTransform] = []
    if ranges.get("hflip"):
        steps.append(A.HorizontalFlip(p=float(ranges["hflip"])))
    affine = ranges.get("affine")
    if affine:
        steps.append(
            A.Affine(
                scale=tuple(affine["scale"]),
                translate_percent=tuple(affine["translate"]),
                rotate=tuple(affine["rotate"]),
                border_mode=cv2.BORDER_CONSTANT,  # fill with zeros, image and mask alike
                p=float(affine["p"]),
            )
        )
    color = ranges.get("color")
    if color:
        steps.append(
            A.ColorJitter(
                brightness=color["brightness"],
                contrast=color["contrast"],
                saturation=color["saturation"],
                hue=color["hue"],
                p=float(color["p"]),
            )
        )
    return steps


def training_transforms(
    size: Sequence[int],
    *,
    resize: bool,
    augmentation: Mapping[str, Any] | None,
    crop: Sequence[int] | None,
    crop_on_car: float,
) -> A.Compose:
    """Resize to ``size`` (height, width), crop, augment, normalise, and make tensors.

    Args:
        size: (height, width) of the frame (whole at validation and inference).
        resize: False when the images already have ``size`` (a resized-image cache).
        augmentation: the ranges of ``augmentations``; None: no augmentation.
        crop: (height, width) of a random crop of the resized frame, or None. Image and mask are
            cropped together, inside the frame, before the augmentations.
        crop_on_car: the share of crops placed to hold a car pixel picked at random
            (albumentations' ``CropNonEmptyMaskIfExists``); the others fall anywhere. Most of the
            error is along the car's edge, which a large crop holding car nearly always holds,
            while background-only crops keep teaching the studio.
    """
    steps: list[A.BasicTransform] = [_resize(size)] if resize else []
    if crop is not None:
        h, w = crop
        steps.append(
            A.OneOf(
                [
                    A.CropNonEmptyMaskIfExists(h, w, p=crop_on_car),
                    A.RandomCrop(h, w, p=1.0 - crop_on_car),
                ],
                p=1.0,
            )
        )
    steps += augmentations(augmentation or {})
    return A.Compose([*steps, *_to_model()])


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalised image ``(3, H, W)`` back to ``uint8`` RGB ``(H, W, 3)``."""
    m = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
