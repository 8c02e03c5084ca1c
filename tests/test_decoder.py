"""carseg.models.frame and carseg.models.decoder: every network pads its input to its multiple
(bottom and right, edge pixels repeated), crops its logits back to the input's size exactly,
refuses a side over MAX_SIDE saying what to do; the decoder goes back up an encoder's maps to the
input's size, refusing maps it cannot decode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from carseg.models.decoder import EncoderUNet, UNetDecoder
from carseg.models.efficientnet_unet import EfficientNetLiteUNet
from carseg.models.frame import FramedNet, pad_to_multiple
from carseg.models.registry import NETS
from carseg.models.resnet_unet import ResNetUNet
from carseg.models.unet import UNet
from carseg.utils.checks import MAX_SIDE


class Seen(FramedNet):
    """The frame around a body that returns its input's first channel and keeps its size."""

    def __init__(self, multiple: int) -> None:
        super().__init__(multiple)
        self.sizes: list[tuple[int, int]] = []

    def body(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return x[:, :1]


class Pyramid(nn.Module):
    """A toy encoder: a 1x1 conv to ``channels[i]`` of the input average-pooled by
    ``reductions[i]``, returned as a tuple (as some timm encoders do)."""

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        self.reductions = reductions
        self.convs = nn.ModuleList(nn.Conv2d(3, c, 1) for c in channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = []
        for conv, r in zip(self.convs, self.reductions, strict=True):
            maps.append(conv(nn.functional.avg_pool2d(x, r) if r > 1 else x))
        return tuple(maps)


def toy_unet(channels=(4, 8, 16), reductions=(2, 4, 8), width=2) -> EncoderUNet:
    return EncoderUNet(Pyramid(list(channels), list(reductions)), channels, reductions, width, 1)


@pytest.mark.parametrize(("height", "width"), [(37, 53), (32, 48), (1, 1), (17, 100)])
@pytest.mark.parametrize("multiple", [1, 16, 32])
def test_padding_reaches_the_multiple_bottom_and_right_by_repeating_the_edge(
    height, width, multiple
):
    x = torch.randn(2, 3, height, width)
    padded = pad_to_multiple(x, multiple)
    h, w = padded.shape[-2:]
    assert h % multiple == 0 and w % multiple == 0
    assert height <= h < height + multiple and width <= w < width + multiple
    assert torch.equal(padded[..., :height, :width], x)  # the image stays at the top left
    assert torch.equal(padded[..., height:, :width], x[..., -1:, :].expand(2, 3, h - height, width))
    assert torch.equal(
        padded[..., :, width:], padded[..., :, width - 1 : width].expand(-1, -1, h, w - width)
    )


@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 96), (5, 7), (33, 1)])
def test_the_frame_pads_for_the_body_and_crops_back_exactly(height, width):
    net = Seen(multiple=16)
    x = torch.randn(2, 3, height, width)
    out = net(x)
    assert net.sizes == [net.padded_size(height, width)]
    assert all(side % 16 == 0 for side in net.sizes[0])
    assert out.shape == (2, 1, height, width)
    assert torch.equal(out, x[:, :1])  # nothing of the padding left, nothing shifted


def test_a_side_over_max_side_is_refused_saying_what_to_do():
    net = Seen(multiple=32)
    assert net(torch.zeros(1, 1, 1, MAX_SIDE)).shape == (1, 1, 1, MAX_SIDE)  # the largest taken
    for height, width in [(1, MAX_SIDE + 1), (MAX_SIDE + 1, 1)]:
        words = rf"{height}x{width} pixels.*at most {MAX_SIDE}.*size=\[h,w\].*tile=\[h,w\]"
        with pytest.raises(ValueError, match=words):
            net(torch.zeros(1, 1, height, width))
    assert len(net.sizes) == 1  # refused before the body ran


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_the_scripted_frame_refuses_it_too():
    net = UNet(in_channels=3, base_width=2, depth=2, bilinear=True, batch_norm=True)
    scripted = torch.jit.script(net.eval())
    assert scripted(torch.zeros(1, 3, 5, 7)).shape == (1, 1, 5, 7)
    with pytest.raises(Exception, match=f"at most {MAX_SIDE} pixels a side"):
        scripted(torch.zeros(1, 3, 4, MAX_SIDE + 1))


def test_a_bad_multiple_and_a_missing_body_are_refused():
    with pytest.raises(ValueError, match="multiple must be an integer >= 1"):
        Seen(multiple=0)
    with pytest.raises(NotImplementedError, match="FramedNet defines no body"):
        FramedNet(multiple=2)(torch.zeros(1, 1, 4, 4))


def nets() -> list[FramedNet]:
    torch.manual_seed(0)
    return [
        UNet(in_channels=3, base_width=2, depth=3, bilinear=True, batch_norm=True),
        UNet(in_channels=3, base_width=2, depth=2, bilinear=False, batch_norm=False),
        ResNetUNet(depth=18, in_channels=3, decoder_width=2, encoder_weights=None),
        EfficientNetLiteUNet(
            in_channels=3, decoder_width=2, encoder_weights=None, input_scaling="lite"
        ),
        toy_unet(),
    ]


def test_every_registered_network_runs_in_the_frame():
    assert all(issubclass(cls, FramedNet) for cls in NETS.classes.values())
    multiples = [net.multiple for net in nets()]
    assert multiples == [8, 4, 32, 32, 8]  # 2**depth; an encoder's deepest reduction


@pytest.mark.parametrize("index", range(5), ids=["unet", "unet_tr", "resnet18", "lite0", "toy"])
def test_every_network_is_its_body_between_the_frames_pad_and_crop(index):
    """No net pads or crops its own way: its logits at an odd size are its body's on the edge-
    padded input, cropped (two paths to the same logits)."""
    net = nets()[index].eval()
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        framed = net(x)
        by_hand = net.body(pad_to_multiple(x, net.multiple))[..., :37, :53]
    assert framed.shape == (2, 1, 37, 53)
    assert torch.equal(framed, by_hand)


def test_the_encoder_unet_hands_its_maps_to_the_decoder_shallowest_first():
    net = toy_unet().eval()
    assert net.multiple == 8
    x = torch.randn(1, 3, 21, 30)
    with torch.no_grad():
        features = list(net.encoder(pad_to_multiple(x, 8)))
        assert torch.equal(net(x), net.decoder(features)[..., :21, :30])
        assert net(x).shape == (1, 1, 21, 30)


def test_decoder_widths_and_output_size():
    """decoder_width=16 over ResNet's maps: steps of 256, 128, 64, 32, 16 channels (smp's
    default), logits at the input's size from maps at 1/2 .. 1/32 of it."""
    channels, reductions = (64, 64, 128, 256, 512), (2, 4, 8, 16, 32)
    decoder = UNetDecoder(channels, reductions, decoder_width=16, out_channels=1)
    widths = [block.conv.block[0].out_channels for block in decoder.blocks]
    assert [*widths, decoder.final_conv.block[0].out_channels] == [256, 128, 64, 32, 16]
    features = [
        torch.randn(1, c, 64 // r, 96 // r) for c, r in zip(channels, reductions, strict=True)
    ]
    assert decoder(features).shape == (1, 1, 64, 96)


def test_a_decoder_over_a_map_at_full_size_and_over_a_single_map():
    """A factor of 1 is no upsampling; one map alone is decoded without skips."""
    decoder = UNetDecoder((8, 16), (1, 2), decoder_width=2, out_channels=3)
    assert isinstance(decoder.final_up, nn.Identity)
    assert decoder([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]).shape == (1, 3, 8, 8)
    single = UNetDecoder((8,), (4,), decoder_width=2, out_channels=1)
    assert len(single.blocks) == 0
    assert single([torch.randn(1, 8, 2, 3)]).shape == (1, 1, 8, 12)


def test_every_decoder_parameter_gets_a_gradient():
    net = toy_unet()
    net(torch.randn(2, 3, 19, 27)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize(
    ("channels", "reductions", "message"),
    [
        ((), (), "one channel count and one reduction each"),
        ((4, 8), (2,), "one channel count and one reduction each"),
        ((4, 8), (2, 3), "do not grow by whole factors"),
        ((4, 8), (4, 2), "do not grow by whole factors"),
    ],
)
def test_maps_the_decoder_cannot_decode_are_refused(channels, reductions, message):
    with pytest.raises(ValueError, match=message):
        UNetDecoder(channels, reductions, decoder_width=2, out_channels=1)
    with pytest.raises(ValueError, match=message):  # the frame leaves the words to the decoder
        EncoderUNet(nn.Identity(), channels, reductions, decoder_width=2, out_channels=1)


def test_a_decoder_width_below_1_is_refused():
    with pytest.raises(ValueError, match="model.net.decoder_width must be an integer >= 1"):
        UNetDecoder((4, 8), (2, 4), decoder_width=0, out_channels=1)
