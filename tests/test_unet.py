import pytest
import torch

from carseg.models.unet import UNet


def unet(**options) -> UNet:
    """A U-Net with conf/model/net/unet.yaml's switches unless ``options`` change them."""
    return UNet(**{"in_channels": 3, "bilinear": True, "batch_norm": True, **options})


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize(("height", "width"), [(64, 96), (37, 53), (17, 100), (5, 7)])
def test_output_size_equals_input_size(bilinear, height, width):
    """Sides that are and are not multiples of 2**depth give logits of the input's size."""
    model = unet(base_width=4, depth=4, bilinear=bilinear).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, height, width))
    assert logits.shape == (2, 1, height, width)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_depth_sets_the_number_of_levels(depth):
    model = unet(base_width=2, depth=depth)
    assert len(model.downs) == len(model.ups) == depth
    deepest = model.downs[-1].conv.block[0]
    assert deepest.out_channels == 2 * 2**depth
    assert model(torch.randn(1, 3, 40, 40)).shape == (1, 1, 40, 40)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_every_parameter_gets_a_gradient(batch_norm):
    model = unet(base_width=4, depth=3, bilinear=False, batch_norm=batch_norm)
    model(torch.randn(2, 3, 24, 40)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_returns_logits_not_probabilities():
    """No sigmoid at the end: shifting the last bias shifts the output below 0 and above 1."""
    model = unet(base_width=4, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.outc.conv.bias.fill_(-5.0)
        low = model(x)
        model.outc.conv.bias.fill_(5.0)
        high = model(x)
    assert low.max() < 0 and high.min() > 1
    assert torch.allclose(high - low, torch.full_like(low, 10.0), atol=1e-4)


def test_batch_norm_switch():
    with_bn = unet(base_width=4, depth=2, batch_norm=True)
    without = unet(base_width=4, depth=2, batch_norm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())


def test_output_is_aligned_with_input_when_padded():
    """Padding goes bottom/right and is cropped off: a shift would move a one-pixel impulse."""
    torch.manual_seed(0)
    model = unet(base_width=4, depth=3, batch_norm=False).eval()
    x = torch.zeros(1, 3, 21, 27)
    with torch.no_grad():
        base = model(x)
        x[..., 3, 4] = 10.0
        changed = (model(x) - base).abs()[0, 0]
    # the impulse's effect is centred on it: the receptive field is symmetric
    ys, xs = torch.nonzero(changed > changed.max() * 0.5, as_tuple=True)
    assert abs(ys.float().mean().item() - 3) < 2 and abs(xs.float().mean().item() - 4) < 2


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"base_width": 0}, {"in_channels": 0}])
def test_bad_arguments_are_refused(kwargs):
    (key,) = kwargs
    with pytest.raises(ValueError, match=f"model.net.{key} must be an integer >= 1"):
        unet(**{"base_width": 4, "depth": 2, **kwargs})
