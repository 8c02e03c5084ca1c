"""carseg.inference.tiling: frames predicted in overlapping tiles agree with whole frames."""

from __future__ import annotations

import pytest
import torch

from carseg.inference.tiling import tiled_probabilities
from support.configs import build_model


def _trained_like(seed: int = 0):
    torch.manual_seed(seed)
    module = build_model(base_width=4, depth=3).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.8, 1.5)
    return module


# Measured on this model at 96x160 with 48x64 tiles, largest (mean) difference from the whole
# frame: no overlap 0.0132 (0.0003), 8 pixels 0.00074 (0.00002), 16 pixels 0.0002 (0.000006),
# 24 pixels 0.00009 (0.000003). The bars leave a factor of 5 to 10 for other CPUs.
@pytest.mark.parametrize(("overlap", "largest"), [(16, 0.002), (24, 0.001)])
def test_tiles_agree_with_the_whole_frame(overlap, largest):
    model = _trained_like()
    images = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = torch.sigmoid(model(images))
        tiled = tiled_probabilities(model, images, (48, 64), overlap)
    assert tiled.shape == whole.shape
    difference = (tiled - whole).abs()
    assert difference.max() < largest and difference.mean() < 1e-4


def test_without_overlap_seams_show():
    """The overlap is what makes tiles agree: without it the tile borders differ."""
    model = _trained_like()
    images = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = torch.sigmoid(model(images))
        tiled = tiled_probabilities(model, images, (48, 64), 0)
    assert (tiled - whole).abs().max() > 0.005


def test_tiles_are_blended_on_the_device_the_model_answers_on():
    """A model on another device than its input (a GPU's answers to a batch on the CPU, here the
    meta device) gets the blending done where its answers are."""

    def elsewhere(images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], 1, *images.shape[2:], device="meta")

    out = tiled_probabilities(elsewhere, torch.zeros(2, 3, 96, 160), (48, 64), 16)
    assert out.device.type == "meta" and out.shape == (2, 1, 96, 160)
