"""Training losses on logits: soft and differentiable (metrics, hard and thresholded, live apart).

- ``bce``: binary cross-entropy, ``BCEWithLogitsLoss`` (numerically stable on logits);
- ``bce_dice``: BCE + ``dice_weight`` * (1 - soft Dice);
- ``bce_logdice``: BCE - ``dice_weight`` * ln(soft Dice), the loss of the Carvana winners
  (Iglovikov et al. 2018, "TernausNet", arXiv:1801.05746; Buslaev et al., the first place write-up).

Soft Dice is computed per image on probabilities and averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carseg.utils.checks import check_choice, check_non_negative

LOSSES = ("bce", "bce_dice", "bce_logdice")


def soft_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of per-image soft Dice of ``sigmoid(logits)`` against ``target``.

    ``smooth`` keeps the ratio defined (and its gradient finite) on empty masks.
    """
    probs = torch.sigmoid(logits).flatten(1)  # (B, H*W)
    target = target.flatten(1)
    intersection = (probs * target).sum(dim=1)
    total = probs.sum(dim=1) + target.sum(dim=1)
    return ((2 * intersection + smooth) / (total + smooth)).mean()


class SegmentationLoss(nn.Module):
    """One of ``LOSSES`` on logits ``(B, 1, H, W)`` and float targets in {0, 1}."""

    def __init__(self, name: str, dice_weight: float) -> None:
        super().__init__()
        check_choice("model.loss", name, LOSSES)
        check_non_negative("model.dice_weight", dice_weight)
        self.name = name
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.name == "bce_dice":
            loss = loss + self.dice_weight * (1 - soft_dice(logits, target))
        elif self.name == "bce_logdice":
            loss = loss - self.dice_weight * torch.log(soft_dice(logits, target))
        return loss
