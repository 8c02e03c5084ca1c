"""Training losses on logits: soft and differentiable (metrics, hard and thresholded, live apart).

One class per loss, each a ``conf/model/loss/`` choice:

- ``BCE``: binary cross-entropy, ``BCEWithLogitsLoss`` (numerically stable on logits);
- ``BCEDice``: BCE + ``dice_weight`` * (1 - soft Dice);
- ``BCELogDice``: BCE - ``dice_weight`` * ln(soft Dice), the loss of the Carvana winners
  (Iglovikov et al. 2018, "TernausNet", arXiv:1801.05746; Buslaev et al., the first place write-up);
- ``BoundaryBCEDice``: BCE + Dice with the pixels in a band along the mask's edge weighted more,
  where nearly all of the remaining error is (the 1st-place team's weighted loss; petrosgk's
  Kaggle-Carvana-Image-Masking-Challenge ``weighted_bce_dice_loss``).

Soft Dice is computed per image on probabilities and averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carseg.utils.checks import check_int, check_non_negative, check_positive
from carseg.utils.errors import ConfigError


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Mean over the batch of per-image soft Dice of ``sigmoid(logits)`` against ``target``.

    ``weight`` (same shape) weights each pixel's share of the overlap and of the sums; ``smooth``
    keeps the ratio defined (and its gradient finite) on empty masks.
    """
    probs = torch.sigmoid(logits).flatten(1)  # (B, H*W)
    target = target.flatten(1)
    if weight is not None:
        weight = weight.flatten(1)
        probs_w, target_w = probs * weight, target * weight
    else:
        probs_w, target_w = probs, target
    intersection = (probs_w * target).sum(dim=1)
    total = probs_w.sum(dim=1) + target_w.sum(dim=1)
    return ((2 * intersection + smooth) / (total + smooth)).mean()


class BCE(nn.Module):
    """Binary cross-entropy on logits ``(B, 1, H, W)`` and float targets in {0, 1}."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)


class BCEDice(nn.Module):
    """BCE + ``dice_weight`` * (1 - soft Dice)."""

    def __init__(self, *, dice_weight: float) -> None:
        super().__init__()
        self.dice_weight = check_non_negative("model.loss.dice_weight", dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce + self.dice_weight * (1 - soft_dice(logits, target))


class BCELogDice(nn.Module):
    """BCE - ``dice_weight`` * ln(soft Dice)."""

    def __init__(self, *, dice_weight: float) -> None:
        super().__init__()
        self.dice_weight = check_non_negative("model.loss.dice_weight", dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce - self.dice_weight * torch.log(soft_dice(logits, target))


class BoundaryBCEDice(nn.Module):
    """Weighted BCE + ``dice_weight`` * (1 - weighted soft Dice), the pixels near the edge of the
    true mask weighted ``edge_weight`` times the others.

    The band is where a ``band`` x ``band`` box average of the true mask is strictly between 0 and
    1: the pixels within ``band // 2`` of the edge, on both sides. The weights are rescaled to keep
    their mean at 1, so the loss's scale (and the learning rate that suits it) stays BCE's.

    Args:
        dice_weight: weight of the Dice term.
        band: side of the box, in pixels of the training size (odd; 11 at 128x128 in petrosgk's
            solution).
        edge_weight: weight of a band pixel against 1 for the others (3 there).
    """

    def __init__(self, *, dice_weight: float, band: int, edge_weight: float) -> None:
        super().__init__()
        self.dice_weight = check_non_negative("model.loss.dice_weight", dice_weight)
        self.band = check_int("model.loss.band", band, 3)
        if band % 2 == 0:
            raise ConfigError(f"model.loss.band must be odd (a box centred on a pixel), got {band}")
        self.edge_weight = check_positive("model.loss.edge_weight", edge_weight)

    def weights(self, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel weights ``(B, 1, H, W)``, mean 1 per image."""
        mean = F.avg_pool2d(target, self.band, stride=1, padding=self.band // 2,
                            count_include_pad=False)  # fmt: skip
        edge = ((mean > 1e-3) & (mean < 1 - 1e-3)).to(target.dtype)
        weight = 1 + (self.edge_weight - 1) * edge
        return weight / weight.mean(dim=(1, 2, 3), keepdim=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weights(target)
        bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
        return bce + self.dice_weight * (1 - soft_dice(logits, target, weight))
