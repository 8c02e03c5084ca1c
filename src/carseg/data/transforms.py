"""What happens to an image and its mask between the file and the model (albumentations).

Resize to the training size, crop (training, optional), augment the training split, normalise with
ImageNet's statistics and make tensors. Inference uses the same pipeline without crop and
augmentation, so a model always sees frames at the size it was trained at.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    size: Sequence[int],
    augment: bool = False,
    crop: Sequence[int] | None = None,
    crop_on_car: float = 0.0,
    resize: bool = True,
) -> A.Compose:
    """Resize to ``size`` (height, width), crop, augment, normalise, and make tensors.

    Images are resized with pixel-area averaging (``cv2.INTER_AREA``, the antialiased choice for
    shrinking, and what ``carseg.data.cache`` stores); masks are resized and warped with
    nearest-neighbour (albumentations' default for masks), so they stay binary.

    Args:
        size: (height, width) of the frame the model sees (whole, at inference and validation).
        augment: random flip, small affine and colour changes (training).
        crop: (height, width) of a random crop of the resized frame (training), or None. Image
            and mask are cropped together, inside the frame, before the augmentations.
        crop_on_car: the share of crops placed to hold a car pixel picked at random
            (albumentations' ``CropNonEmptyMaskIfExists``); the others fall anywhere. Most of the
            error is along the car's edge, which a large crop holding car nearly always holds,
            while background-only crops keep teaching the studio.
        resize: False when the images already have ``size`` (no resize step at all).
    """
    height, width = size
    steps: list[A.BasicTransform] = []
    if resize:
        steps.append(A.Resize(height, width, interpolation=cv2.INTER_AREA))
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
    if augment:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-5, 5),
                border_mode=cv2.BORDER_CONSTANT,  # fill with zeros, image and mask alike
                p=0.5,
            ),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        ]
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(steps)
