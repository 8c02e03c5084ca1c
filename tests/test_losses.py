"""carseg.models.losses: soft, differentiable losses on logits, one class per conf/model/loss
choice."""

import pytest
import torch
import torch.nn.functional as F

from carseg.models.losses import BCE, BCEDice, BCELogDice, BoundaryBCEDice, soft_dice
from carseg.utils.errors import ConfigError
from support.configs import build_model


def _square(size: int = 16) -> torch.Tensor:
    target = torch.zeros(2, 1, size, size)
    target[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return target


def test_soft_dice_is_one_for_confident_correct_logits():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert soft_dice(logits, target).item() == pytest.approx(1.0, abs=1e-4)
    assert soft_dice(-logits, target).item() < 0.1


LOSSES = [
    BCE(),
    BCEDice(dice_weight=0.5),
    BCELogDice(dice_weight=0.5),
    BoundaryBCEDice(dice_weight=0.5, band=5, edge_weight=3.0),
]


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: type(f).__name__)
def test_losses_fall_as_predictions_improve_and_have_gradients(loss_fn):
    target = _square(8)
    good, bad = (target * 2 - 1) * 4, torch.zeros_like(target)
    assert loss_fn(good, target) < loss_fn(bad, target)
    logits = bad.clone().requires_grad_()
    loss_fn(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_combined_losses_add_the_dice_term():
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = torch.randn(2, 1, 8, 8)
    bce = BCE()(logits, target)
    dice = soft_dice(logits, target)
    assert BCEDice(dice_weight=0.5)(logits, target) == pytest.approx(bce + 0.5 * (1 - dice))
    assert BCELogDice(dice_weight=2.0)(logits, target) == pytest.approx(bce - 2.0 * torch.log(dice))


def test_the_boundary_band_is_the_edge_on_both_sides_weighted_as_asked():
    loss = BoundaryBCEDice(dice_weight=1.0, band=5, edge_weight=3.0)
    target = _square(16)  # car in rows and columns 4..11
    weight = loss.weights(target)[0, 0]
    assert weight.mean().item() == pytest.approx(1.0, abs=1e-6)  # the loss keeps BCE's scale
    ratio = weight.max() / weight.min()
    assert ratio.item() == pytest.approx(3.0)
    heavy = weight > weight.min()
    # within band // 2 = 2 pixels of the edge, inside and outside the car; nowhere else
    assert heavy[4, 6] and heavy[2, 6] and heavy[5, 8]  # on, outside and inside the top edge
    assert not heavy[8, 8] and not heavy[0, 0] and not heavy[1, 8]


def test_boundary_loss_weighs_errors_at_the_edge_more_than_plain_bce_dice():
    """An error on the edge's band costs more than the same error far from it, where plain
    BCE + Dice costs them the same."""
    target = _square(16)
    right = (target * 2 - 1) * 6
    at_edge, far = right.clone(), right.clone()
    at_edge[:, :, 4, 4:12] = -6  # the car's top row called background
    far[:, :, 15, 0:8] = 6  # a background row far from the car called car
    plain = BCEDice(dice_weight=0.0)
    boundary = BoundaryBCEDice(dice_weight=0.0, band=5, edge_weight=3.0)
    assert plain(at_edge, target).item() == pytest.approx(plain(far, target).item(), rel=1e-4)
    assert boundary(at_edge, target) > 2 * boundary(far, target)
    expected = F.binary_cross_entropy_with_logits(at_edge, target, weight=boundary.weights(target))
    assert boundary(at_edge, target).item() == pytest.approx(expected.item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dice_weight": -1.0, "band": 5, "edge_weight": 3.0}, "dice_weight"),
        ({"dice_weight": 1.0, "band": 4, "edge_weight": 3.0}, "odd"),
        ({"dice_weight": 1.0, "band": 5, "edge_weight": 0.0}, "edge_weight"),
    ],
)
def test_bad_loss_options_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BoundaryBCEDice(**kwargs)


@pytest.mark.parametrize("name", ["bce", "bce_dice", "bce_logdice", "boundary_bce_dice"])
def test_every_loss_of_the_config_group_builds(name):
    module = build_model(base_width=2, depth=1, loss=name)
    target = _square(8)
    assert torch.isfinite(module.criterion(torch.zeros_like(target), target))
