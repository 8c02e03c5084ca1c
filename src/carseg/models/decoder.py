"""The U-Net decoder of the encoder U-Nets (``carseg.models.resnet_unet``, ``efficientnet_unet``,
``timm_unet``) and the frame they share (``EncoderUNet``).

An encoder hands over feature maps at growing reductions (for a ResNet: 1/2, 1/4, 1/8, 1/16,
1/32 of the input's side); the decoder goes back up the way the expansive path of U-Net does
(Ronneberger et al. 2015), as TernausNet (Iglovikov and Shvets 2018) and
segmentation_models_pytorch's ``Unet`` do over a pretrained encoder: from the deepest map, each
step upsamples to the next shallower map's size, concatenates it (the skip) and applies
(conv 3x3 => BN => ReLU) * 2. A last step upsamples to the input's size, where a double
convolution without skip and a 1x1 convolution give the logits.

Widths: the last step has ``decoder_width`` channels and each coarser step twice the one below it;
``decoder_width=16`` over a ResNet gives 256, 128, 64, 32, 16 (segmentation_models_pytorch's
default ``decoder_channels``).

``EncoderUNet`` is the frame of every encoder U-Net (``carseg.models.resnet_unet``,
``efficientnet_unet``, ``timm_unet``): it pads the input to a multiple of the encoder's deepest
reduction (``carseg.models.frame``), hands the encoder's maps to this decoder and crops the logits
back, so that a new encoder U-Net supplies only its encoder, channels and reductions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from carseg.models.frame import FramedNet
from carseg.models.unet import DoubleConv, OutConv
from carseg.utils.checks import check_int


def upsample(factor: int) -> nn.Module:
    """bilinear upsampling by ``factor`` (the identity for 1)"""
    if factor == 1:
        return nn.Identity()
    return nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False)


class DecoderBlock(nn.Module):
    """upsample => concat skip => (conv 3x3 => BN => ReLU) * 2"""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.up = upsample(factor)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, batch_norm=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetDecoder(nn.Module):
    """Logits at the input's size from an encoder's feature maps, shallowest first.

    Args:
        channels: channels of each feature map, shallowest first (ResNet-34: 64, 64, 128, 256,
            512).
        reductions: how many times smaller than the input each map is, shallowest first and
            each a whole multiple of the one before (ResNet: 2, 4, 8, 16, 32).
        decoder_width: channels of the full-size step; each coarser step has twice as many.
        out_channels: one logit per class.
    """

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        decoder_width: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        check_int("model.net.decoder_width", decoder_width, 1)
        channels, reductions = [int(c) for c in channels], [int(r) for r in reductions]
        if not channels or len(channels) != len(reductions):
            raise ValueError(
                f"an encoder's feature maps need one channel count and one reduction each, got "
                f"channels {channels} and reductions {reductions}"
            )
        steps = [
            reductions[0],
            *(b / a for a, b in zip(reductions[:-1], reductions[1:], strict=True)),
        ]
        if any(s < 1 or s != int(s) for s in steps):
            raise ValueError(
                f"the encoder's reductions {reductions} do not grow by whole factors: the "
                "decoder cannot upsample one map onto the next"
            )
        factors = [int(s) for s in steps]  # factors[i]: from map i to map i - 1 (0: the input)
        # Step i consumes skip i (0: the shallowest) and has decoder_width * 2**(i + 1) channels;
        # the deepest map comes in with its own channels.
        widths = [decoder_width * 2 ** (i + 1) for i in range(len(channels) - 1)]
        ins = [*widths[1:], channels[-1]]
        self.blocks = nn.ModuleList(
            DecoderBlock(ins[i], channels[i], widths[i], factors[i + 1])
            for i in reversed(range(len(channels) - 1))
        )  # deepest first, the order forward runs them
        self.final_up = upsample(factors[0])
        shallowest = widths[0] if widths else channels[-1]  # what the last skip step gives
        self.final_conv = DoubleConv(shallowest, decoder_width, batch_norm=True)
        self.outc = OutConv(decoder_width, out_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W)`` from maps ``(B, channels[i], H / reductions[i],
        W / reductions[i])``, shallowest first."""
        x = features[-1]  # the bottleneck
        skips = features[:-1]
        for block in self.blocks:
            x = block(x, skips.pop())
        return self.outc(self.final_conv(self.final_up(x)))


class EncoderUNet(FramedNet):
    """pad => encoder => decoder => crop: a U-Net over an encoder's feature maps.

    Args:
        encoder: returns its feature maps shallowest first, ``channels[i]`` channels at
            ``1 / reductions[i]`` of its input's side.
        channels, reductions: as ``UNetDecoder``'s; the input is padded to a multiple of the
            largest reduction.
        decoder_width, out_channels: as ``UNetDecoder``'s.
    """

    def __init__(
        self,
        encoder: nn.Module,
        channels: Sequence[int],
        reductions: Sequence[int],
        decoder_width: int,
        out_channels: int,
    ) -> None:
        # (no reductions: the decoder says what is wrong)
        super().__init__(multiple=max((int(r) for r in reductions), default=1))
        self.encoder = encoder
        self.decoder = UNetDecoder(channels, reductions, decoder_width, out_channels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)  # shallowest first, the deepest at 1 / multiple of (H', W')
        return self.decoder(list(features))  # (B, out_channels, H', W')
