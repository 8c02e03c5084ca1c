"""What happens to an image and its mask between the file and the model (albumentations).

Resize to the training size, augment the training split, normalise with ImageNet's statistics and
make tensors. Inference uses the same pipeline without augmentation, so a model always sees what
it was trained on.
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
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Resize to ``size`` (height, width), augment if ``train``, normalise, and make tensors.

    Images are resized with pixel-area averaging (``cv2.INTER_AREA``, the antialiased choice for
    shrinking, and what ``carseg.cache`` stores); masks are resized and warped with
    nearest-neighbour (albumentations' default for masks), so they stay binary.
    """
    height, width = size
    steps: list[A.BasicTransform] = [A.Resize(height, width, interpolation=cv2.INTER_AREA)]
    if train:
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
    steps += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(steps)
