"""carseg.inference.refine: the box means and the guided filter equal a direct, slow
implementation; the fast guided filter moves a blurred edge onto the photo's own edge; the
Predictor applies it to every model's probabilities before the threshold, in eval and predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from carseg.inference.predictor import Predictor, at_size
from carseg.inference.refine import (
    Refine,
    box_mean,
    fast_guided_upsample,
    grey_guide,
    guided_filter,
)
from carseg.utils.errors import ConfigError


def slow_box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """The mean over each pixel's (2r + 1)^2 window, cut at the border: loops, obviously."""
    h, w = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1].mean()
    return out


def slow_guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He, Sun and Tang 2010, algorithm 1, window by window: for each window k, a_k and b_k by
    least squares of p on the guide; each pixel averages the a_k, b_k of the windows holding it."""
    h, w = p.shape
    a, b = np.zeros_like(p), np.zeros_like(p)
    for i in range(h):
        for j in range(w):
            window = (slice(max(i - r, 0), i + r + 1), slice(max(j - r, 0), j + r + 1))
            gi, pi = guide[window].ravel(), p[window].ravel()
            a[i, j] = ((gi * pi).mean() - gi.mean() * pi.mean()) / (gi.var() + eps)
            b[i, j] = pi.mean() - a[i, j] * gi.mean()
    return slow_box_mean(a, r) * guide + slow_box_mean(b, r)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_box_mean_equals_the_direct_one(radius):
    x = np.random.default_rng(radius).random((9, 13))
    fast = box_mean(torch.from_numpy(x)[None, None], radius)[0, 0].numpy()
    np.testing.assert_allclose(fast, slow_box_mean(x, radius), atol=1e-12)


@pytest.mark.parametrize(("radius", "eps"), [(1, 1e-3), (2, 1e-2), (3, 1e-4)])
def test_guided_filter_equals_the_direct_one(radius, eps):
    rng = np.random.default_rng(0)
    guide, p = rng.random((11, 14)), rng.random((11, 14))
    fast = guided_filter(
        torch.from_numpy(guide)[None, None], torch.from_numpy(p)[None, None], radius, eps
    )[0, 0].numpy()
    np.testing.assert_allclose(fast, slow_guided_filter(guide, p, radius, eps), atol=1e-10)


def test_the_fast_form_at_the_models_size_is_the_guided_filter_clipped():
    """Where the image has the model's size, nothing is upsampled: the plain filter, in [0, 1]."""
    rng = np.random.default_rng(1)
    guide = rng.random((12, 16)).astype(np.float32)
    probs = rng.random((1, 12, 16)).astype(np.float32)
    got = fast_guided_upsample(torch.from_numpy(probs), torch.from_numpy(guide), 1, 1e-3)
    expected = slow_guided_filter(guide.astype(float), probs[0].astype(float), 1, 1e-3)
    np.testing.assert_allclose(got.numpy(), np.clip(expected, 0, 1), atol=1e-4)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def synthetic_photo(height: int = 240, width: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 RGB photo ``(H, W, 3)`` of a bright car (an ellipse with a bumpy outline, so the
    edge is not a shape that bilinear upsampling draws well) on a darker noisy background, and
    its true mask ``(H, W)``."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    angle = np.arctan2(y - height / 2, x - width / 2)
    radius = 1 + 0.08 * np.sin(7 * angle)
    car = ((x - width / 2) / (0.35 * width)) ** 2 + ((y - height / 2) / (0.3 * height)) ** 2
    truth = car < radius**2
    grey = np.where(truth, 180.0, 70.0) + rng.normal(0, 6, (height, width))
    photo = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return photo, truth


def test_the_filter_moves_a_blurred_edge_onto_the_photos_edge():
    """The true mask taken down 8 times (as a model's probabilities at its size, blurred a little)
    and brought back up: bilinear alone draws the edge between the model's pixels; the guided
    filter redraws it on the photo's edge, and Dice rises."""
    photo, truth = synthetic_photo()
    small = F.interpolate(
        torch.from_numpy(truth.astype(np.float32))[None, None], scale_factor=1 / 8, mode="area"
    )
    blurred = F.avg_pool2d(small, 3, stride=1, padding=1, count_include_pad=False)[0]  # (1, h, w)
    plain = at_size(blurred, truth.shape).numpy() > 0.5
    refined = fast_guided_upsample(blurred, grey_guide(photo), 1, 1e-3).numpy() > 0.5
    before, after = dice(plain, truth), dice(refined, truth)
    assert after > before + 0.005, (before, after)  # measured: 0.9918 -> 1.0000


class Constant(nn.Module):
    """A 'model' whose logits are fixed probabilities at its size (``(1, h, w)``), for any
    input."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", torch.logit(probs.clamp(1e-4, 1 - 1e-4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 1, *self.logits.shape[-2:])


def test_the_predictor_refines_before_the_threshold_only_when_asked():
    photo, truth = synthetic_photo()
    small = F.interpolate(
        torch.from_numpy(truth.astype(np.float32))[None, None], scale_factor=1 / 8, mode="area"
    )[0]
    size = tuple(small.shape[-2:])
    settings = {"sizes": [size], "tta": False, "tile": None, "tile_overlap": 0}
    plain = Predictor(models=[Constant(small)], **settings)
    guided = Predictor(
        models=[Constant(small)], refine={"guided": True, "radius": 1, "eps": 1e-3}, **settings
    )
    assert plain.guide(photo) is None and guided.guide(photo).dtype == torch.uint8
    (p,) = plain.probabilities([photo])
    (g,) = guided.probabilities([photo])
    assert p.shape == g.shape == truth.shape
    assert dice(g > 0.5, truth) > dice(p > 0.5, truth)
    expected = fast_guided_upsample(plain.models[0].logits.sigmoid()[0], grey_guide(photo), 1, 1e-3)
    np.testing.assert_allclose(g, expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="refine.guided=true needs each image's grey photo"):
        guided({}, [photo.shape[:2]])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"guided": True, "radius": 0, "eps": 1e-3}, "refine.radius"),
        ({"guided": True, "radius": 1, "eps": 0}, "refine.eps"),
        ({"guided": "yes", "radius": 1, "eps": 1e-3}, "refine.guided"),
        ({"guided": True, "radius": 1, "eps": 1e-3, "size": 3}, "refine has no option size"),
        ({"guided": True}, "refine has no radius, eps"),
        (True, "refine is a group"),
    ],
)
def test_bad_refine_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        Refine.of(options)


def test_a_run_records_the_refine_options_only_when_on():
    assert Refine.of(None).record() is None
    assert Refine.of({"guided": False, "radius": 4, "eps": 1e-2}).record() is None
    on = {"guided": True, "radius": 2, "eps": 1e-2}
    assert Refine.of(on).record() == on


def test_eval_and_predicts_loop_carries_the_guide_to_the_predictor(tmp_path):
    """PredictionSet reads the grey photo in the loader, collate lists it, predict_step passes
    it on: the loop's masks are the guided probabilities thresholded."""
    from PIL import Image

    from carseg.inference.loop import InferenceModule, PredictionSet, collate
    from carseg.inference.postprocess import PostProcess

    photo, truth = synthetic_photo()
    path = tmp_path / "car.png"
    Image.fromarray(photo).save(path)
    small = F.interpolate(
        torch.from_numpy(truth.astype(np.float32))[None, None], scale_factor=1 / 8, mode="area"
    )[0]
    predictor = Predictor(
        models=[Constant(small)],
        sizes=[tuple(small.shape[-2:])],
        tta=False,
        tile=None,
        tile_overlap=0,
        refine={"guided": True, "radius": 1, "eps": 1e-3},
    )
    batch = collate([PredictionSet([path], predictor)[0]])
    assert [tuple(g.shape) for g in batch["guides"]] == [truth.shape]
    module = InferenceModule(predictor, 0.5, PostProcess(largest_component=False, fill_holes=False))
    (mask,) = module.predict_step(batch, 0)["masks"]
    (probs,) = predictor.probabilities([photo])
    np.testing.assert_array_equal(mask, (probs > 0.5).astype(np.uint8))
    assert dice(mask.astype(bool), truth) > 0.99


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_configs_turn_it_on(command):
    from support.configs import compose

    cfg = compose(config=command)
    assert Refine.of(cfg.refine).record() is None  # off by default: the model's own, none here
    on = compose("refine.guided=true", "refine.radius=2", "refine.eps=0.01", config=command)
    assert Refine.of(on.refine).record() == {"guided": True, "radius": 2, "eps": 0.01}


NULLS = {"guided": None, "radius": None, "eps": None}  # eval's and predict's default
RECORDED = {"guided": True, "radius": 2, "eps": 1e-3}  # a recipe's, in its checkpoints


def test_options_left_null_are_the_models_own():
    assert Refine.of(NULLS, [RECORDED]).record() == RECORDED
    assert Refine.of(NULLS, [RECORDED, RECORDED]).record() == RECORDED  # an ensemble
    # a model that records none: off, and the measured radius and eps if turned on
    assert Refine.of(NULLS, [None]).record() is None
    assert Refine.of({**NULLS, "guided": True}, [None]).record() == RECORDED
    # what the command says wins, key by key
    assert Refine.of({**NULLS, "guided": False}, [RECORDED]).record() is None
    assert Refine.of({**NULLS, "radius": 1}, [RECORDED]).record() == {**RECORDED, "radius": 1}


def test_models_that_recorded_different_options_need_them_given():
    with pytest.raises(ConfigError, match="refine.guided=null means the models' own"):
        Refine.of(NULLS, [RECORDED, None])
    with pytest.raises(ConfigError, match="give refine.eps for all of them"):
        Refine.of(NULLS, [RECORDED, {**RECORDED, "eps": 1e-2}])
    assert Refine.of({**NULLS, "guided": False}, [RECORDED, None]).record() is None
