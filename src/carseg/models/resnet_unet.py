"""U-Net on a ResNet-18/34 encoder: ImageNet features in the contracting path.

The encoder is the ResNet of He, Zhang, Ren and Sun (2016, "Deep Residual Learning for Image
Recognition", arXiv:1512.03385) without its pooling and classifier: a 7x7/2 stem and max pool,
then four stages of BasicBlocks. Its five outputs (the stem's at 1/2 of the input's side, layer1
to layer4 at 1/4 to 1/32) are the skips of a U-Net decoder (``carseg.models.decoder``): a
pretrained encoder under a U-Net decoder is TernausNet's design (Iglovikov and Shvets 2018,
arXiv:1801.05746, part of the winning Carvana solution), with a ResNet as in LinkNet (Chaurasia
and Culurciello 2017, arXiv:1707.03718), whose decoder adds the skips where ours concatenates
them.

The encoder is written in plain PyTorch with torchvision's parameter names (``conv1``, ``bn1``,
``layer1.0.conv1`` ... ``layer4.1.downsample.0``), so a torchvision ImageNet weights file such as
``resnet34-b627a593.pth`` loads into ``ResNetUNet.encoder`` key for key, without torchvision:
``model.net.encoder_weights=/path/resnet34-b627a593.pth``. Nothing is ever downloaded. The
weights expect images normalised with ImageNet's mean and std, which carseg's data pipeline
already does (``carseg.data.transforms.IMAGENET_MEAN``/``IMAGENET_STD``).

Deviations from the papers: bilinear upsampling in the decoder; a double convolution at full size
before the 1x1 output convolution; inputs whose sides are not multiples of 32 are padded (edge
pixels repeated) and the logits cropped back, so any size works (``carseg.models.frame``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from carseg.models.decoder import EncoderUNet
from carseg.utils.checks import check_int
from carseg.utils.errors import ConfigError, DataError, DataNotFoundError
from carseg.utils.torch_files import check_finite, read_torch_file

log = logging.getLogger(__name__)

# BasicBlocks per stage (He et al. 2016, table 1)
LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)  # channels of layer1 .. layer4
CHANNELS = (64, *WIDTHS)  # of the five feature maps: the stem's, then layer1 .. layer4
REDUCTIONS = (2, 4, 8, 16, 32)  # how many times smaller than the input each map is
HEAD = "fc."  # the ImageNet classifier's keys in torchvision's files: the U-Net has no use for it
COUNTER = "num_batches_tracked"  # BatchNorm's step counter: absent from older torchvision files


class BasicBlock(nn.Module):
    """(conv 3x3 => BN => ReLU => conv 3x3 => BN) + shortcut => ReLU: torchvision's BasicBlock,
    the shortcut a (conv 1x1 => BN) ``downsample`` where the stride or the width changes"""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            if stride != 1 or in_channels != out_channels
            else nn.Identity()  # no parameters: the key layout stays torchvision's
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNetEncoder(nn.Module):
    """ResNet-18/34 without pooling and classifier, returning its five feature maps.

    Its ``state_dict`` keys are torchvision's ``resnet18``/``resnet34`` keys less ``fc.*``.
    """

    def __init__(self, depth: int, in_channels: int) -> None:
        super().__init__()
        blocks = LAYERS[depth]
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = 64
        for stage, (count, width) in enumerate(zip(blocks, WIDTHS, strict=True), start=1):
            stride = 1 if stage == 1 else 2  # layer2 .. layer4 halve the size in their first block
            layer = [BasicBlock(c_in, width, stride)]
            layer += [BasicBlock(width, width, 1) for _ in range(count - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*layer))
            c_in = width
        # torchvision's initialisation, for training from scratch
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x1 = self.layer1(self.maxpool(stem))  # (B, 64, H/4, W/4)
        x2 = self.layer2(x1)  # (B, 128, H/8, W/8)
        x3 = self.layer3(x2)  # (B, 256, H/16, W/16)
        x4 = self.layer4(x3)  # (B, 512, H/32, W/32): the bottleneck
        return [stem, x1, x2, x3, x4]


class ResNetUNet(EncoderUNet):
    """U-Net with a ResNet-18/34 encoder, returning logits ``(B, out_channels, H, W)`` for images
    ``(B, in_channels, H, W)`` normalised with ImageNet's mean and std.

    Args:
        depth: 18 or 34, the ResNet's layers.
        in_channels: image channels (3 for RGB; ImageNet weights need 3).
        decoder_width: channels of the decoder's full-size step; each coarser step has twice as
            many (16: 256, 128, 64, 32, 16).
        encoder_weights: a torchvision ImageNet weights file of this depth
            (``resnet34-b627a593.pth``, ``resnet18-f37072fd.pth``) to start the encoder from;
            None: from scratch. It only initialises: weights loaded afterwards (a checkpoint's)
            replace it.
        out_channels: one logit per class (1: car against background).

    Raises:
        ConfigError: a depth other than 18 or 34, or a width below 1.
        DataNotFoundError, DataError: ``encoder_weights`` names no file, or one that does not fit
            the encoder (see ``load_encoder_weights``).
    """

    def __init__(
        self,
        *,
        depth: int,
        in_channels: int,
        decoder_width: int,
        encoder_weights: str | os.PathLike | None,
        out_channels: int = 1,
    ) -> None:
        if isinstance(depth, bool) or depth not in LAYERS:
            raise ConfigError(
                f"model.net.depth={depth!r}: choose 18 or 34 (ResNet-18, ResNet-34); deeper "
                "ResNets are model/net=timm_unet model.net.encoder=resnet50"
            )
        check_int("model.net.in_channels", in_channels, 1)
        check_int("model.net.out_channels", out_channels, 1)
        encoder = ResNetEncoder(depth, in_channels)
        # pad to a multiple of 32 => encoder => decoder => crop back (EncoderUNet)
        super().__init__(encoder, CHANNELS, REDUCTIONS, decoder_width, out_channels)
        self.depth = depth
        if encoder_weights is not None:
            load_encoder_weights(self.encoder, encoder_weights, f"ResNet-{depth}")


def load_encoder_weights(
    encoder: nn.Module,
    path: str | os.PathLike,
    name: str,
    *,
    head: tuple[str, ...] = (HEAD,),
    rename: Callable[[str], str] | None = None,
    fix: str | None = None,
) -> int:
    """Load a torchvision weights file into ``encoder``; returns how many tensors it loaded.

    The file is read by carseg's one safe reader (``carseg.utils.torch_files``): tensors and
    containers only, never code; weights holding NaN or infinity are refused. Its keys must be
    the encoder's, less nothing and plus nothing but the classifier (``fc.*``, not used) and the
    BatchNorm counters older files lack. A dict whose ``state_dict``
    holds such keys (a checkpoint of a classifier) is read as that state dict.

    Another network's file loads the same way (``carseg.models.efficientnet_unet``): ``head``
    gives the prefixes of its classifier's keys, ``rename`` maps its other keys to the encoder's
    (a key it does not know comes back as it is, and so is refused, named as in the file), and
    ``fix`` says where to get the right file.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: a file torch cannot read safely, not a dict, whose keys or shapes differ
            from the encoder's (the first difference is named, the others counted), or holding
            NaN or infinity.
    """
    where = f"model.net.encoder_weights={path}"
    file = Path(path).expanduser()
    fix = fix or (
        f"Give torchvision's ImageNet weights of {name} (torchvision keeps the files it downloads "
        "in ~/.cache/torch/hub/checkpoints; copy one here: carseg downloads nothing), or "
        "model.net.encoder_weights=null to train from scratch"
    )
    if not file.is_file():
        what = "a folder" if file.is_dir() else "no such file"
        raise DataNotFoundError(f"{where}: {what}. {fix}")
    content = read_torch_file(file, "weights file", where, fix)
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        where += " (its state_dict)"
        content = content["state_dict"]
    if not isinstance(content, Mapping):
        raise DataError(f"{where} holds a {type(content).__name__}, not a state dict. {fix}")
    rename = rename or str
    ignored = [str(k) for k in content if str(k).startswith(head)]
    origin = {rename(str(k)): str(k) for k in content if not str(k).startswith(head)}
    given = {key: content[file_key] for key, file_key in origin.items()}
    wanted = encoder.state_dict()
    mismatch = _first_mismatch(given, wanted, origin)
    if mismatch:
        missing = [k for k in wanted if k not in given and not k.endswith(COUNTER)]
        unexpected = [k for k in given if k not in wanted]
        misshapen = [k for k in wanted if k in given and _shape(given[k]) != _shape(wanted[k])]
        raise DataError(
            f"{where} does not fit the {name} encoder: {mismatch}; {len(missing)} keys missing, "
            f"{len(unexpected)} unexpected, {len(misshapen)} of another shape. {fix}"
        )
    check_finite(given, where, fix)
    encoder.load_state_dict({**wanted, **given}, strict=True)  # counters the file lacks: kept
    notes = []
    if ignored:
        notes.append(f"ignored {_listed(ignored)}: the ImageNet classification head, not used")
    kept = [k for k in wanted if k not in given]
    if kept:
        notes.append(f"the file has no {COUNTER} for {len(kept)} BatchNorm layers: kept at 0")
    log.info(
        "Loaded %d tensors of %s into the %s encoder%s",
        len(given),
        file,
        name,
        f" ({'; '.join(notes)})" if notes else "",
    )
    return len(given)


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _listed(keys: list[str], most: int = 4) -> str:
    """``keys`` joined by commas, the tail counted past ``most``."""
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more


def _first_mismatch(
    given: Mapping[str, Any],
    wanted: Mapping[str, torch.Tensor],
    origin: Mapping[str, str] | None = None,
) -> str:
    """The first key, in the encoder's order, that the file lacks or holds in another shape (else
    the first the encoder lacks), in words; "" if the file fits. ``origin``: each key's name in
    the file where it differs (a renamed layout), named beside it."""
    origin = origin or {}

    def named(key: str) -> str:
        there = origin.get(key, key)
        return key if there == key else f"{key} ({there} in the file)"

    for key, tensor in wanted.items():
        here = tuple(tensor.shape)
        if key not in given:
            if not key.endswith(COUNTER):
                return f"the first mismatch is {key}, {here} here, which the file lacks"
        elif _shape(given[key]) != here:
            there = _shape(given[key]) or f"a {type(given[key]).__name__}"
            return f"the first mismatch is {named(key)}, {there} in the file but {here} here"
    for key, value in given.items():
        if key not in wanted:
            return (
                f"the first mismatch is {named(key)}, {_shape(value) or type(value).__name__} in "
                "the file, which the encoder lacks"
            )
    return ""
