"""The car's edge placed with the full-resolution photo: a fast guided filter on the probabilities.

A model sees the photo at 160x240 or 320x480; its probabilities, upsampled bilinearly to
1918x1280, put the edge between its pixels, blurred over 4-8 photo pixels. The guided filter (He,
Sun and Tang 2010, "Guided Image Filtering", ECCV; TPAMI 2013) models the output as a linear
function of a guide image in every window: ``q = a * I + b``, with ``a`` and ``b`` fitted by least
squares to the input ``p`` (``a = cov(I, p) / (var(I) + eps)``, ``b = mean(p) - a * mean(I)``) and
averaged over the windows covering each pixel. With the grey photo as the guide, a soft edge in
``p`` is redrawn where the photo's own edge is. The fast form (He and Sun 2015, "Fast Guided
Filter", arXiv:1505.00996) fits ``a`` and ``b`` at the model's size and applies them, upsampled
bilinearly, to the full-resolution guide: the cost at full size is two upsamplings and a
multiply-add. The radius is in the model's pixels; ``eps`` trades edges followed (small) against
probabilities kept (large).

Box means are ``avg_pool2d`` over (2r + 1)^2 windows that exclude what falls outside the image
(He's ``boxfilter`` divided by the window's pixel count ``N``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from carseg.utils.checks import check_bool, check_int, check_positive
from carseg.utils.errors import ConfigError

# what an option left null (the models' own) is when no model records one: off, and the radius
# and eps measured best on carvana_dev's validation cars (benchmarks/README.md)
DEFAULTS: dict[str, Any] = {"guided": False, "radius": 2, "eps": 1e-3}


@dataclass(frozen=True)
class Refine:
    """The ``refine`` options of eval and predict (``conf/inference/default.yaml``).

    Attributes:
        guided: apply the fast guided filter to each model's probabilities.
        radius: of its box windows, in the model's pixels (1: 3x3 windows).
        eps: its regularisation (probabilities and the guide are in [0, 1]).
    """

    guided: bool
    radius: int
    eps: float

    @classmethod
    def of(
        cls,
        options: Mapping[str, Any] | None,
        recorded: Sequence[Mapping[str, Any] | None] = (),
    ) -> Refine:
        """The options of a config's ``refine`` group, checked; None: off. An option left null
        is the models' own: what their checkpoints recorded (``recorded``, one per model: the
        edge option their recipe was measured best with), else ``DEFAULTS``.

        Raises:
            ConfigError: not a group, a key missing or unknown, a radius below 1, an eps not
                above 0, or an option left null that the models recorded differently.
        """
        if options is None:
            return cls(guided=False, radius=DEFAULTS["radius"], eps=DEFAULTS["eps"])
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"refine={options!r}: refine is a group (refine.guided=true refine.radius=2 "
                "refine.eps=1e-3)"
            )
        keys = tuple(DEFAULTS)
        unknown = sorted(set(options) - set(keys))
        missing = [k for k in keys if k not in options]
        if unknown or missing:
            what = f"no option {', '.join(unknown)}" if unknown else f"no {', '.join(missing)}"
            raise ConfigError(f"refine has {what}: it takes guided, radius and eps")
        chosen = {key: options[key] for key in keys}
        # each model's own: what it recorded; a model that records none has it off (its recipe
        # was not measured better with it)
        own = [dict(r) if r else {"guided": False} for r in recorded]
        for key in keys:
            if chosen[key] is not None:
                continue
            theirs = {o[key] for o in own if o.get(key) is not None}
            if len(theirs) > 1:
                raise ConfigError(
                    f"refine.{key}=null means the models' own, but they recorded different "
                    f"ones ({sorted(theirs, key=str)}): give refine.{key} for all of them"
                )
            chosen[key] = theirs.pop() if theirs else DEFAULTS[key]
        return cls(
            guided=check_bool("refine.guided", chosen["guided"]),
            radius=check_int("refine.radius", chosen["radius"], 1),
            eps=check_positive("refine.eps", chosen["eps"]),
        )

    def record(self) -> dict[str, Any] | None:
        """What a run records of it: the options when on, None when off."""
        if not self.guided:
            return None
        return {"guided": True, "radius": self.radius, "eps": self.eps}


def grey_guide(image: np.ndarray) -> torch.Tensor:
    """The guide of a uint8 RGB photo ``(H, W, 3)``: its grey levels, uint8 ``(H, W)`` (ITU-R
    BT.601 weights, OpenCV's ``COLOR_RGB2GRAY``); uint8 to keep the loader's batches small."""
    return torch.from_numpy(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean of ``x`` ``(B, C, h, w)`` over each pixel's (2r + 1)^2 window, the window cut at
    the image's border (only pixels inside count)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_coefficients(
    guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The guided filter's window-averaged linear coefficients ``(mean_a, mean_b)``, each like
    ``src``, for a guide and an input ``(B, 1, h, w)``: the output is ``mean_a * guide +
    mean_b``."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius), box_mean(b, radius)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He, Sun and Tang's guided filter of ``src`` by ``guide``, both ``(B, 1, h, w)``."""
    mean_a, mean_b = guided_coefficients(guide, src, radius, eps)
    return mean_a * guide + mean_b


def fast_guided_upsample(
    probs: torch.Tensor, guide: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """Probabilities ``(1, h, w)`` at a model's size brought to the guide's size ``(H, W)`` by
    the fast guided filter: ``(H, W)`` in [0, 1].

    Args:
        probs: one image's probabilities at the model's size, float.
        guide: its grey photo at full size, uint8 ``(H, W)`` (``grey_guide``) or float in [0, 1].
        radius: the box windows' radius at the model's size.
        eps: the regularisation.
    """
    full = guide.to(device=probs.device, dtype=torch.float32)
    if guide.dtype == torch.uint8:
        full = full / 255
    full = full[None, None]  # (1, 1, H, W)
    size = tuple(full.shape[-2:])
    # the guide as the model saw the photo: pixel-area averages, as images are resized for it
    small = F.interpolate(full, size=tuple(probs.shape[-2:]), mode="area")
    mean_a, mean_b = guided_coefficients(small, probs[None].float(), radius, eps)
    up = F.interpolate(
        torch.cat([mean_a, mean_b], dim=1), size=size, mode="bilinear", align_corners=False
    )  # (1, 2, H, W): as the probabilities alone would be upsampled
    return (up[0, 0] * full[0, 0] + up[0, 1]).clamp_(0, 1)


def check_guides(guides: Sequence[torch.Tensor] | None, sizes: Sequence[Sequence[int]]) -> None:
    """Refuse missing guides, or guides of other sizes than the images'.

    Raises:
        ValueError: a caller that turned the guided filter on but passed no guide per image.
    """
    if guides is None or len(guides) != len(sizes):
        raise ValueError(
            "refine.guided=true needs each image's grey photo at its own size (grey_guide): "
            "pass guides=[...] to the Predictor, one per image"
        )
    for guide, size in zip(guides, sizes, strict=True):
        if tuple(guide.shape) != tuple(size):
            raise ValueError(f"a guide of {tuple(guide.shape)} for an image of {tuple(size)}")
