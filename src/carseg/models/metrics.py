"""Dice, the Carvana competition's metric: computed per image, averaged once over the whole set.

Kaggle scored the mean over test images of ``2 |P & T| / (|P| + |T|)``, with P and T the
thresholded prediction and the true mask at the original 1918x1280 size. Two paths compute it here:

- ``carvana_dice()``: a torchmetrics ``DiceScore`` set up for that mean (samplewise aggregation,
  so per-image scores are gathered over all batches and across processes, then averaged once);
- ``dice_per_image``: the same formula on tensors of any resolution, for evaluation and tests.

Empty-mask rule: an image whose true and predicted masks are both empty has Dice 0/0; both paths
leave it out of the mean (torchmetrics' rule), where Kaggle scored it 1. Every Carvana image shows
a car, so on Carvana the two agree. A prediction that is empty while the truth is not scores 0.
"""

from __future__ import annotations

import torch
from torchmetrics.segmentation import DiceScore


def carvana_dice() -> DiceScore:
    """The mean of per-image Dice, fed thresholded integer masks ``(N, 1, H, W)`` in {0, 1}.

    Probabilities must not be fed: DiceScore accepts them silently and returns another number.
    """
    return DiceScore(
        num_classes=1,
        include_background=True,  # one channel, the car: nothing to drop
        average="macro",
        aggregation_level="samplewise",
        input_format="one-hot",
    )


def dice_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of each image, NaN where both masks are empty.

    Args:
        preds: binary masks ``(N, H, W)`` or ``(N, 1, H, W)``, bool or {0, 1}.
        target: the true masks, same shape.

    Returns:
        float64 ``(N,)``; average with ``torch.nanmean`` to apply the empty-mask rule.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
    p = preds.reshape(preds.shape[0], -1).bool()
    t = target.reshape(target.shape[0], -1).bool()
    intersection = (p & t).sum(dim=1, dtype=torch.float64)
    total = p.sum(dim=1, dtype=torch.float64) + t.sum(dim=1, dtype=torch.float64)
    return 2 * intersection / total  # 0/0 -> NaN for two empty masks
