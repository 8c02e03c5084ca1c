"""U-Net for binary segmentation (Ronneberger, Fischer and Brox, 2015, arXiv:1505.04597).

The network reads top-down like figure 1 of the paper: blocks first (``DoubleConv -> Down -> Up ->
OutConv``), then ``UNet``. It returns logits; the sigmoid lives in metrics and inference.

Deviations from the paper, all usual in Carvana solutions (milesial/Pytorch-UNet among them):
- "same" padding (3x3 convolutions with padding 1), so the output has the input's size and no
  overlap-tile strategy is needed;
- BatchNorm after every convolution (optional: ``batch_norm=False`` restores conv + bias + ReLU);
- bilinear upsampling followed by a 1x1 convolution (default) or a 2x2 transposed convolution;
- configurable base width (64 in the paper: ``conf/model/net/unet_paper.yaml``) and depth (4
  poolings in the paper);
- inputs whose sides are not multiples of ``2**depth`` are padded (edge pixels repeated) and the
  logits cropped back, so any size works (``carseg.models.frame``, every network's frame).
"""

from __future__ import annotations

import torch
from torch import nn

from carseg.models.frame import FramedNet
from carseg.utils.checks import check_int


class DoubleConv(nn.Module):
    """(conv 3x3 => BN => ReLU) * 2"""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                nn.Conv2d(c_in, out_channels, kernel_size=3, padding=1, bias=not batch_norm),
                nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
                nn.ReLU(inplace=True),
            ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """maxpool 2x2 => DoubleConv: halves the size, the contracting path's step"""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """upsample 2x (halving the channels) => concat skip => DoubleConv: the expansive path's step"""

    def __init__(
        self, in_channels: int, out_channels: int, bilinear: bool, batch_norm: bool
    ) -> None:
        super().__init__()
        half = in_channels // 2
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, half, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        self.conv = DoubleConv(half + out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutConv(nn.Module):
    """conv 1x1 to one logit per class"""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(FramedNet):
    """U-Net returning logits ``(B, out_channels, H, W)`` for images ``(B, in_channels, H, W)``.

    Args:
        in_channels: image channels (3 for RGB).
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``.
        depth: number of poolings (4 in the paper); the input is padded to a multiple of
            ``2**depth``.
        bilinear: bilinear upsampling + 1x1 conv if True, transposed convolution if False.
        batch_norm: BatchNorm after every 3x3 convolution.
        out_channels: one logit per class (1: car against background).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_width: int,
        depth: int,
        bilinear: bool,
        batch_norm: bool,
        out_channels: int = 1,
    ) -> None:
        check_int("model.net.in_channels", in_channels, 1)
        check_int("model.net.base_width", base_width, 1)
        check_int("model.net.depth", depth, 1)
        super().__init__(multiple=2**depth)  # the frame pads input sides to multiples of this
        self.depth = depth
        widths = [base_width * 2**level for level in range(depth + 1)]  # e.g. 64 .. 1024
        self.inc = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], bilinear, batch_norm) for i in reversed(range(depth))
        )
        self.outc = OutConv(widths[0], out_channels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H', W')`` of images ``(B, C, H', W')``, ``H'`` and ``W'``
        multiples of ``2**depth``: ``forward`` (``FramedNet``) pads to them and crops back."""
        # Contracting path. The depth is configurable, so the skips are a list:
        # skips[0] is the full-resolution feature map (x1 in the paper's figure), skips[-1] the
        # deepest before the bottleneck.
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()  # the bottleneck, (B, base_width * 2**depth, H'/2**depth, W'/2**depth)
        # Expansive path: each Up consumes the skip of its own level, deepest first.
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)  # (B, out_channels, H', W')
