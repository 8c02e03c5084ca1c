"""carseg.data.transforms: resize, crop, augment and normalise, image and mask together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    inference_transforms,
    training_transforms,
)
from support.configs import augmentation


def test_a_crop_cuts_image_and_mask_together_inside_the_frame(tiny_set):
    raw = CarvanaDataset(tiny_set, image_dir="train")
    image, mask = raw[3]  # 80x120
    marked = image.copy()
    marked[..., 0] = np.arange(120, dtype=np.uint8)[None, :]  # each column's position, in red
    marked[..., 1] = np.arange(80, dtype=np.uint8)[:, None]  # each row's, in green
    transform = training_transforms(
        (80, 120), resize=True, augmentation=None, crop=(32, 48), crop_on_car=0.5
    )
    mean = np.array([0.485, 0.456]) * 255
    std = np.array([0.229, 0.224]) * 255
    for _ in range(20):
        out = transform(image=marked, mask=mask)
        crop, crop_mask = out["image"], out["mask"]
        assert crop.shape == (3, 32, 48) and crop_mask.shape == (32, 48)
        cols = (crop[0].numpy() * std[0] + mean[0]).round().astype(int)
        rows = (crop[1].numpy() * std[1] + mean[1]).round().astype(int)
        left, top = cols[0, 0], rows[0, 0]
        assert 0 <= left <= 120 - 48 and 0 <= top <= 80 - 32  # inside the frame
        assert np.array_equal(cols[0], np.arange(left, left + 48))  # an unscaled crop
        assert torch.equal(crop_mask, torch.from_numpy(mask[top : top + 32, left : left + 48]))


@pytest.mark.parametrize(("share", "expected"), [(1.0, 1.0), (0.0, None)])
def test_crops_on_car_are_the_share_asked_for(tiny_set, share, expected):
    """Small crops of small cars: centred on the car, every crop holds car; anywhere, some don't."""
    ds = CarvanaDataset(
        tiny_set,
        transform=training_transforms(
            (80, 120), resize=True, augmentation=None, crop=(12, 12), crop_on_car=share
        ),
        image_dir="train",
    )
    np.random.seed(0)
    with_car = np.mean([bool(ds[i % len(ds)][1].any()) for i in range(200)])
    if expected is not None:
        assert with_car == expected
    else:
        assert 0.05 < with_car < 0.9


def test_denormalize_undoes_the_imagenet_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    normalised = torch.from_numpy(((rgb / 255.0 - mean) / std).transpose(2, 0, 1)).float()
    assert np.abs(denormalize(normalised).astype(int) - rgb).max() <= 1


def test_transforms_resize_normalise_and_keep_masks_binary(tiny_set):
    ds = CarvanaDataset(
        tiny_set,
        transform=training_transforms(
            (48, 64), resize=True, augmentation=augmentation(), crop=None, crop_on_car=0.0
        ),
        image_dir="train",
    )
    raw = CarvanaDataset(tiny_set, image_dir="train")
    torch.manual_seed(0)
    for i in range(0, 80, 9):
        image, mask = ds[i]
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32
        assert mask.shape == (1, 48, 64) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert 0.3 < mask.mean() / raw[i][1].mean() < 3  # still the car, not an empty warp
    # normalised: a plain validation transform maps the 0..255 image by ImageNet statistics
    val = CarvanaDataset(
        tiny_set,
        transform=inference_transforms((80, 120), resize=True),
        image_dir="train",
    )
    image, _ = val[0]
    expected = (raw[0][0][..., 0] / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(image[0], torch.from_numpy(expected).float(), atol=1e-4)


def test_augmentation_flips_image_and_mask_together(tiny_set):
    """Every augmented pair still lines up: the mask follows the image's flip and warp."""
    import albumentations as A

    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    image, mask = CarvanaDataset(tiny_set, image_dir="train")[3]
    out = flip(image=image, mask=mask)
    assert np.array_equal(out["mask"], mask[:, ::-1])
    assert np.array_equal(out["image"], image[:, ::-1])
    # and the training pipeline changes something from one draw to the next
    ds = CarvanaDataset(
        tiny_set,
        transform=training_transforms(
            (80, 120), resize=True, augmentation=augmentation(), crop=None, crop_on_car=0.0
        ),
        image_dir="train",
    )
    draws = [ds[3][1] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
