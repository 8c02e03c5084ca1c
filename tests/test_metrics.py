import pytest
import torch

from carseg.models.losses import SegmentationLoss, soft_dice
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


def test_soft_dice_is_one_for_confident_correct_logits():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert soft_dice(logits, target).item() == pytest.approx(1.0, abs=1e-4)
    assert soft_dice(-logits, target).item() < 0.1


@pytest.mark.parametrize("name", ["bce", "bce_dice", "bce_logdice"])
def test_losses_fall_as_predictions_improve_and_have_gradients(name):
    loss_fn = SegmentationLoss(name, dice_weight=0.5)
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good, bad = (target * 2 - 1) * 4, torch.zeros_like(target)
    assert loss_fn(good, target) < loss_fn(bad, target)
    logits = bad.clone().requires_grad_()
    loss_fn(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_combined_losses_add_the_dice_term():
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = torch.randn(2, 1, 8, 8)
    bce = SegmentationLoss("bce", 1.0)(logits, target)
    dice = soft_dice(logits, target)
    assert SegmentationLoss("bce_dice", 0.5)(logits, target) == pytest.approx(
        bce + 0.5 * (1 - dice)
    )
    assert SegmentationLoss("bce_logdice", 2.0)(logits, target) == pytest.approx(
        bce - 2.0 * torch.log(dice)
    )


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="bce_dice"):
        SegmentationLoss("focal", 1.0)
