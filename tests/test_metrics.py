import pytest
import torch

from carseg.models.metrics import carvana_dice, dice_per_image


def test_dice_per_image_formula():
    pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[1, 0, 0, 0]]])
    true = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]])
    scores = dice_per_image(pred, true)
    assert scores[0].item() == pytest.approx(2 * 1 / 3)
    assert torch.isnan(scores[1])  # both empty: left out of the mean
    assert scores[2].item() == 0.0
    assert torch.nanmean(scores).item() == pytest.approx(1 / 3)


def test_torchmetrics_dice_equals_mean_of_per_image_dice_over_uneven_batches():
    """The logged metric is the mean over all images, not a mean of batch means."""
    torch.manual_seed(0)
    preds = (torch.rand(7, 1, 16, 16) > 0.5).long()
    target = (torch.rand(7, 1, 16, 16) > 0.7).long()
    target[3] = 0
    preds[3] = 0  # one image with both masks empty
    preds[5] = 0  # one prediction empty where the truth is not: scores 0
    metric = carvana_dice()
    for batch in (slice(0, 5), slice(5, 7)):  # batches of 5 and 2
        metric.update(preds[batch], target[batch])
    expected = torch.nanmean(dice_per_image(preds, target)).item()
    batch_means = [
        torch.nanmean(dice_per_image(preds[s], target[s])).item()
        for s in (slice(0, 5), slice(5, 7))
    ]
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert expected != pytest.approx(sum(batch_means) / 2, abs=1e-4)


def test_dice_per_image_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        dice_per_image(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
