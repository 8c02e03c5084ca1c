"""carseg.inference.predictor: probabilities at each image's own size, TTA, ensembles."""

import numpy as np
import pytest
import torch
from torch import nn

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import inference_transforms
from carseg.inference.predictor import Predictor, at_size, size_ceiling_dice
from carseg.utils.errors import CarsegError
from support.configs import build_model, predictor


class Ramp(nn.Module):
    """Logits rising from -1 to 3 across the width: zero at a quarter of the way."""

    def __init__(self, low: float = -1.0, high: float = 3.0) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        return torch.linspace(self.low, self.high, width).expand(batch, 1, height, width).clone()


def test_probabilities_are_upsampled_before_thresholding():
    """Bilinear probabilities at full size put the edge between the model's coarse pixels."""
    (prob,) = predictor(Ramp(), (4, 8)).probabilities([np.zeros((10, 100, 3), dtype=np.uint8)])
    assert prob.shape == (10, 100)
    edge = int(np.argmax(prob[0] > 0.5))
    # zero crossing at x = 1.75 of 8 model pixels -> (1.75 + 0.5) / 8 * 100 = 28.1 image pixels;
    # thresholding first and then resizing would put it on a model-pixel boundary (25)
    assert edge == 29 or edge == 28


def test_each_image_keeps_its_own_size():
    images = [np.zeros((30, 50, 3), np.uint8), np.zeros((17, 23, 3), np.uint8)]
    probs = predictor(Ramp(), (16, 24)).probabilities(images)
    assert [p.shape for p in probs] == [(30, 50), (17, 23)]


def test_tta_averages_the_mirror_prediction():
    torch.manual_seed(0)
    model = build_model(base_width=4, depth=2).eval()
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    plain = predictor(model, (16, 24)).probabilities([image])[0]
    mirrored = predictor(model, (16, 24)).probabilities([image[:, ::-1].copy()])[0]
    tta = predictor(model, (16, 24), tta=True).probabilities([image])[0]
    assert np.allclose(tta, (plain + mirrored[:, ::-1]) / 2, atol=1e-5)
    assert not np.allclose(tta, plain, atol=1e-4)


def test_an_ensemble_averages_its_models_at_each_images_size():
    """Two models of other sizes: the ensemble's probability is the mean of theirs, each
    upsampled to the image's size first."""
    image = np.zeros((30, 60, 3), np.uint8)
    a, b = Ramp(-1.0, 3.0), Ramp(2.0, -4.0)
    alone_a = predictor(a, (8, 16)).probabilities([image])[0]
    alone_b = predictor(b, (12, 20)).probabilities([image])[0]
    both = Predictor(models=[a, b], sizes=[(8, 16), (12, 20)], tta=False, tile=None, tile_overlap=0)
    assert set(both.inputs(image)) == {"8x16", "12x20"}  # one input per model size
    (mean,) = both.probabilities([image])
    assert np.allclose(mean, (alone_a + alone_b) / 2, atol=1e-6)
    assert not np.allclose(mean, alone_a, atol=1e-3)


def test_the_size_ceiling_is_the_dice_of_the_truth_taken_down_and_back():
    truth = np.zeros((64, 96), np.uint8)
    truth[10:50, 7:83] = 1  # a box whose edges fall between the pixels of a 16x24 grid
    assert size_ceiling_dice(truth, (64, 96), 0.5) == 1.0  # at its own size: nothing lost
    coarse = size_ceiling_dice(truth, (16, 24), 0.5)
    finer = size_ceiling_dice(truth, (32, 48), 0.5)
    assert 0.9 < coarse < finer < 1.0


def _trained_like(seed: int = 0):
    torch.manual_seed(seed)
    module = build_model(base_width=4, depth=3).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.8, 1.5)
    return module


def test_an_image_at_the_training_size_is_not_resized():
    """The native frame goes to the model as it is: no resize in, no resize out."""
    model = _trained_like()
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    one = predictor(model, (40, 60))

    def must_not_resize(**kwargs):
        raise AssertionError("resized an image that has the model's size")

    one.prepare["40x60"].resize = must_not_resize
    (prob,) = one.probabilities([image])
    normalised = inference_transforms((40, 60), resize=False)(image=image)["image"]
    with torch.no_grad():
        expected = torch.sigmoid(model(normalised[None]))[0]
    assert np.array_equal(prob, expected[0].numpy())
    assert at_size(expected, (40, 60)).data_ptr() == expected.data_ptr()  # no resize out
    assert at_size(expected, (80, 120)).shape == (80, 120)


def test_the_predictor_tiles_when_asked(tiny_set):
    model = _trained_like()
    image = CarvanaDataset(tiny_set, image_dir="train").load_image(
        CarvanaDataset(tiny_set, image_dir="train").ids[0]
    )  # 80x120
    whole = predictor(model, (80, 120)).probabilities([image])[0]
    tiled = predictor(model, (80, 120), tile=(48, 64), tile_overlap=16)
    assert np.abs(tiled.probabilities([image])[0] - whole).max() < 0.005
    with pytest.raises(CarsegError, match="tile_overlap"):
        predictor(model, (80, 120), tile=(48, 64), tile_overlap=48)
