"""carseg.inference.cutouts: a cut-out shows the car the mask shows, a composite weighs the photo
by its alpha, and ``background=`` takes a colour or an image file."""

import numpy as np
import pytest
from PIL import Image

from carseg.inference.cutouts import alpha_of, composite, parse_background
from carseg.utils.errors import ConfigError, UnreadableFileError


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.85])
@pytest.mark.parametrize("feather", [0.05, 0.2, 0.5])
def test_a_feathered_alpha_follows_the_final_mask(threshold, feather):
    """Alpha is at least 128 exactly where the mask is car, whatever the threshold; a component
    post-processing removed is transparent, fringe included, and a filled hole opaque."""
    rows, cols = np.mgrid[0:60, 0:120]
    big = np.clip(1.2 - np.hypot(rows - 30, cols - 35) / 20, 0, 1)  # a car, soft-edged
    small = np.clip(1.2 - np.hypot(rows - 30, cols - 95) / 10, 0, 1)  # a smaller one
    probabilities = (np.maximum(big, small) * 255).round().astype(np.uint8)
    probabilities[28:33, 33:38] = 0  # a hole in the big car
    mask = (probabilities / 255.0 > threshold).astype(np.uint8)
    alpha = alpha_of(mask, probabilities, feather, threshold)
    assert np.array_equal(alpha >= 128, mask == 1)
    largest = mask.copy()  # largest_component and fill_holes
    largest[:, 65:] = 0
    largest[28:33, 33:38] = 1
    alpha = alpha_of(largest, probabilities, feather, threshold)
    assert (alpha[:, 70:] == 0).all() and (alpha[28:33, 33:38] == 255).all()
    assert np.array_equal(alpha >= 128, largest == 1)


def test_without_a_feather_the_alpha_is_the_mask():
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    probabilities = np.full((2, 2), 128, np.uint8)
    assert alpha_of(mask, probabilities, 0.0, 0.5).tolist() == [[0, 255], [255, 0]]
    assert alpha_of(mask, None, 0.3, 0.5).tolist() == [[0, 255], [255, 0]]


def test_a_composite_weighs_the_photo_by_its_alpha_over_a_colour_or_a_stretched_image():
    photo = np.full((2, 4, 3), 200, np.uint8)
    alpha = np.array([[255, 0, 128, 255], [0, 0, 0, 0]], np.uint8)
    out = composite(photo, alpha, (0, 100, 0))
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert out[0, 0].tolist() == [200, 200, 200] and out[0, 1].tolist() == [0, 100, 0]
    assert out[0, 2].tolist() == [100, 150, 100]  # half-way (128/255) between the two
    ground = np.zeros((1, 1, 3), np.uint8)  # one black pixel, stretched to 2 x 4
    assert (composite(photo, alpha, ground)[1] == 0).all()


def test_a_background_is_a_colour_or_an_image_file(tmp_path):
    assert parse_background(None) is None
    assert parse_background("white") == (255, 255, 255)
    assert parse_background("#f0e0d0") == (240, 224, 208)
    assert parse_background([1, 2, 3]) == (1, 2, 3)
    image = tmp_path / "ground.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    assert parse_background(str(image)) == image
    with pytest.raises(ConfigError, match="three values from 0 to 255"):
        parse_background([1, 2, 300])
    with pytest.raises(ConfigError, match="neither a colour"):
        parse_background("not-a-colour")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableFileError, match="broken.png"):
        parse_background(str(tmp_path / "broken.png"))
