"""Car probabilities at each image's own size, from one trained model or the average of several.

Each model sees the image resized to its training size (as in training: ``carseg.data.transforms``);
its probabilities are upsampled (bilinear) back to the image's own size *before* thresholding, as
Kaggle scored masks at 1918x1280. Test-time augmentation averages the probabilities of the image
and of its mirror image; an ensemble averages its models' probabilities at the image's size (the
models may differ in size and network). Frames too large for the device run in tiles.

With ``refine.guided`` (``carseg.inference.refine``), each model's probabilities are brought to
the image's size by the fast guided filter, with the grey photo at full size as the guide, instead
of bilinear upsampling alone: here, the one place where eval and predict (and so anything built on
the Predictor) turn model outputs into full-size probabilities, before the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from carseg.data.transforms import inference_transforms, resize_image
from carseg.inference.refine import Refine, check_guides, fast_guided_upsample, grey_guide
from carseg.inference.tiling import tiled_probabilities
from carseg.models.metrics import dice_per_image
from carseg.utils.checks import check_bool, check_int, check_size
from carseg.utils.errors import ConfigError

MIN_TILE = 32  # pixels a side


def size_key(size: Sequence[int]) -> str:
    """``"320x480"``: the key of a model size's input in a batch."""
    return f"{int(size[0])}x{int(size[1])}"


class ModelInput:
    """A uint8 RGB image ``(H, W, 3)`` as a model's input ``(3, h, w)``: resized to the model's
    size (unless it has it already) and normalised, as in training."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.resize = inference_transforms(self.size, resize=True)
        self.normalise = inference_transforms(self.size, resize=False)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        transform = self.normalise if image.shape[:2] == self.size else self.resize
        return transform(image=image)["image"]


def at_size(probs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Probabilities ``(1, h, w)`` resized (bilinear) to ``size`` (H, W): ``(H, W)``; not
    resized when they have it. Bilinear probabilities, thresholded after, put the car's edge
    between the model's pixels, as Kaggle scored masks at the photo's own size."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs[0]
    return F.interpolate(probs[None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def size_ceiling_dice(truth: np.ndarray, size: Sequence[int], threshold: float) -> float:
    """The Dice of a true mask ``(H, W)`` taken down to a model's ``size`` and back up the way
    predictions are: no model at that size can do much better.

    Down as images are resized for the model (pixel-area averaging: each pixel's share of car,
    what a perfect model would answer), up as probabilities are (``at_size``), then thresholded.
    """
    if tuple(truth.shape) == tuple(size):
        return 1.0
    small = resize_image(truth.astype(np.float32), size)
    back = at_size(torch.from_numpy(small)[None], truth.shape) > threshold
    return float(dice_per_image(back[None], torch.from_numpy(truth)[None])[0])


class Predictor(nn.Module):
    """Probabilities at each image's original size.

    A module (``Trainer.predict`` moves it to the device with its models). Loader workers prepare
    each image for every model size (``inputs``); ``forward`` runs each model on its size's batch,
    whole or in tiles, with TTA, and returns the average of their probabilities resized to each
    image's own size.

    Args:
        models: the networks (images to logits): a trained ``SegmentationModule`` or an
            ``OnnxNet`` each.
        sizes: (height, width) each model expects (its training size).
        tta: also predict the mirror image and average the probabilities.
        tile: (height, width) of the tiles a frame is predicted in, for frames that do not fit
            the device's memory whole; None: whole frames.
        tile_overlap: pixels neighbouring tiles share; their probabilities are blended there with
            a raised-cosine window, so no seam shows.
        refine: the ``refine`` options (``carseg.inference.refine.Refine.of``); None: off. With
            ``guided``, ``forward`` needs each image's grey photo (``guide``).
    """

    def __init__(
        self,
        *,
        models: Sequence[nn.Module],
        sizes: Sequence[Sequence[int]],
        tta: bool,
        tile: Sequence[int] | None,
        tile_overlap: int,
        refine: Refine | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.refine = refine if isinstance(refine, Refine) else Refine.of(refine)
        if not models or len(models) != len(sizes):
            raise ConfigError("a Predictor needs one size for each of at least one model")
        self.models = nn.ModuleList(models)
        self.sizes = [check_size("size", list(size)) for size in sizes]
        self.tta = check_bool("tta", tta)
        # a tile smaller than this is mostly border: slow (154 s for three tiny images at 1x1)
        # and wrong near its edges
        self.tile = None if tile is None else check_size("tile", tile, minimum=MIN_TILE)
        if self.tile is not None:
            check_int("tile_overlap", tile_overlap, 0)
            if tile_overlap >= min(self.tile):
                raise ConfigError(
                    f"tile_overlap={tile_overlap} must be smaller than the tile {list(self.tile)}"
                )
        self.tile_overlap = tile_overlap
        self.prepare = {size_key(s): ModelInput(s) for s in self.sizes}

    def inputs(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Every model size's input ``(3, h, w)`` of a uint8 RGB image ``(H, W, 3)``."""
        return {key: prepare(image) for key, prepare in self.prepare.items()}

    def guide(self, image: np.ndarray) -> torch.Tensor | None:
        """The guide ``forward`` needs for a uint8 RGB image ``(H, W, 3)``: its grey photo, uint8
        ``(H, W)``, where ``refine.guided`` is on; else None."""
        return grey_guide(image) if self.refine.guided else None

    def model_probabilities(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """One model's probabilities ``(B, 1, h, w)`` of prepared images ``(B, 3, h, w)``, on the
        device the model answers on."""
        probs = self._probabilities(model, batch)
        if self.tta:
            probs = (probs + self._probabilities(model, batch.flip(-1)).flip(-1)) / 2
        return probs

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        sizes: Sequence[Sequence[int]],
        guides: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Probabilities ``(H_i, W_i)`` of each image at its own size ``sizes[i]``, the mean of
        every model's, from a batch of ``inputs`` (one ``(B, 3, h, w)`` per model size) and, with
        ``refine.guided``, each image's ``guide`` ``(H_i, W_i)``.

        Raises:
            ValueError: ``refine.guided`` without a guide of each image's size.
        """
        if self.refine.guided:
            check_guides(guides, sizes)
        total: list[torch.Tensor] | None = None
        for model, size in zip(self.models, self.sizes, strict=True):
            probs = self.model_probabilities(model, inputs[size_key(size)])
            if self.refine.guided:
                r, eps = self.refine.radius, self.refine.eps
                full = [
                    fast_guided_upsample(p, g, r, eps) for p, g in zip(probs, guides, strict=True)
                ]
            else:
                full = [at_size(p, s) for p, s in zip(probs, sizes, strict=True)]
            total = full if total is None else [t + f for t, f in zip(total, full, strict=True)]
        return [t / len(self.models) for t in total]

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Car probability maps, float32 ``(H_i, W_i)``, for uint8 RGB images ``(H_i, W_i, 3)``:
        the whole pipeline in this process, on the models' device (notebooks, tests)."""
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        batch = [self.inputs(image) for image in images]
        inputs = {k: torch.stack([b[k] for b in batch]).to(device) for k in self.prepare}
        guides = [self.guide(image) for image in images] if self.refine.guided else None
        probs = self(inputs, [image.shape[:2] for image in images], guides)
        return [p.float().cpu().numpy() for p in probs]

    def _probabilities(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        if self.tile is None:
            return torch.sigmoid(model(batch).float())
        return tiled_probabilities(model, batch, self.tile, self.tile_overlap)
