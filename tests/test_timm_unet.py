"""carseg.models.timm_unet: a clear error where timm is missing; where it imports, any size,
training, and the same network as the ResNet U-Net over timm's resnet34; without timm, the frame
and the hand-off to the decoder around a stand-in for it."""

from __future__ import annotations

import builtins
import importlib
import re
import sys

import pytest
import torch

from carseg.models.timm_unet import NEEDS_TIMM, TimmUNet
from carseg.utils.errors import ConfigError
from support.configs import compose, instantiate


def _import_or_skip(name: str, reason: str):
    """``pytest.importorskip`` that also skips where the module is installed but fails to import
    (timm imports torchvision, whose C ops raise a RuntimeError beside a torch of another build)."""
    try:
        return importlib.import_module(name)
    except Exception as err:
        pytest.skip(f"{reason} ({type(err).__name__}: {err})")


@pytest.fixture
def timm():
    return _import_or_skip("timm", "timm is an optional extra: pip install -e '.[timm]'")


def timm_unet(**options) -> TimmUNet:
    """conf/model/net/timm_unet.yaml's settings unless changed."""
    settings = {"encoder": "resnet34", "in_channels": 3, "decoder_width": 16, "pretrained": False}
    return TimmUNet(**{**settings, **options})


def test_without_timm_the_config_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails, installed or not
    with pytest.raises(ConfigError, match=re.escape(NEEDS_TIMM)):
        instantiate(compose("model/net=timm_unet").model)
    assert NEEDS_TIMM == "model/net=timm_unet needs timm: pip install -e '.[timm]'"


def test_a_timm_that_fails_to_import_is_named_too(monkeypatch):
    """Installed beside a torch its torchvision does not fit, timm raises a RuntimeError."""
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "timm", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ConfigError, match=re.escape(NEEDS_TIMM) + ".*torchvision::nms"):
        timm_unet()


def test_bad_settings_are_refused_before_timm_is_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match="model.net.pretrained must be true or false"):
        timm_unet(pretrained="yes")
    with pytest.raises(ConfigError, match="model.net.encoder must name a timm model"):
        timm_unet(encoder="")


def test_forward_at_an_odd_size_and_training_steps(timm):
    """Two steps: timm starts each residual block's last BatchNorm at zero (zero_init_last), so
    the first step moves those scales and the second every weight of the block behind them."""
    torch.manual_seed(0)
    model = timm_unet(encoder="resnet18", decoder_width=4)
    assert model.multiple == 32
    x, target = torch.randn(2, 3, 37, 53), (torch.rand(2, 1, 37, 53) > 0.5).float()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 1, 37, 53)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()
        optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged


def test_over_timms_resnet34_it_is_the_resnet_unet(timm):
    """The same layout under the same names: ResNetUNet loads TimmUNet's weights key for key and
    computes the same logits (two paths to one network)."""
    from carseg.models.resnet_unet import ResNetUNet

    torch.manual_seed(0)
    ours = timm_unet(decoder_width=4).eval()
    resnet = ResNetUNet(depth=34, in_channels=3, decoder_width=4, encoder_weights=None).eval()
    resnet.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        assert (ours(x) - resnet(x)).abs().max() < 1e-5


def test_an_unknown_encoder_is_a_config_error(timm):
    with pytest.raises(ConfigError, match="model.net.encoder=no_such_net: Unknown model"):
        timm_unet(encoder="no_such_net")


class _FeatureInfo:
    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        self._channels, self._reductions = channels, reductions

    def channels(self) -> list[int]:
        return self._channels

    def reduction(self) -> list[int]:
        return self._reductions


def test_the_frame_around_a_stand_in_for_timm(monkeypatch):
    """Where timm does not import: a stand-in ``timm.create_model`` that gives carseg's ResNet-34
    encoder with timm's ``feature_info`` and its maps as a tuple. TimmUNet pads to the deepest
    reduction, hands the maps to the decoder and crops back as ResNetUNet does: the same logits
    from the same weights at an odd size."""
    from types import SimpleNamespace

    from carseg.models.resnet_unet import CHANNELS, REDUCTIONS, ResNetEncoder, ResNetUNet

    class Features(ResNetEncoder):
        def forward(self, x):
            return tuple(super().forward(x))

    asked = {}

    def create_model(name, **options):
        asked.update(options, name=name)
        encoder = Features(34, options["in_chans"])
        encoder.feature_info = _FeatureInfo(list(CHANNELS), list(REDUCTIONS))
        return encoder

    monkeypatch.setitem(sys.modules, "timm", SimpleNamespace(create_model=create_model))
    torch.manual_seed(0)
    ours = timm_unet(decoder_width=4).eval()
    assert asked == {"name": "resnet34", "features_only": True, "pretrained": False, "in_chans": 3}
    assert ours.multiple == 32
    resnet = ResNetUNet(depth=34, in_channels=3, decoder_width=4, encoder_weights=None).eval()
    resnet.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        logits = ours(x)
        assert logits.shape == (1, 1, 45, 70)
        assert torch.equal(logits, resnet(x))
