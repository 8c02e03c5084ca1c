"""U-Net on any encoder of timm (huggingface/pytorch-image-models) that gives feature maps.

``timm.create_model(encoder, features_only=True)`` returns a network whose outputs are its
stages' feature maps; ``feature_info`` says their channels and reductions. The decoder is the
ResNet U-Net's (``carseg.models.decoder.UNetDecoder``, see ``carseg.models.resnet_unet``) over
those maps; inputs are padded to a multiple of the largest reduction and the logits cropped back
(``carseg.models.decoder.EncoderUNet``).

timm is an optional extra (``pip install -e '.[timm]'``) imported only when a ``TimmUNet`` is
built. ``pretrained: true`` makes timm download the encoder's ImageNet weights from the Hugging
Face hub (into its cache, ``~/.cache/huggingface``) when the net is built, so it needs the network
or a filled cache; carseg itself never downloads anything, and ``conf/model/net/timm_unet.yaml``
keeps ``pretrained: false``. Pretrained timm encoders expect ImageNet normalisation, which the data
pipeline applies (``carseg.data.transforms.IMAGENET_MEAN``/``IMAGENET_STD``).
"""

from __future__ import annotations

from carseg.models.decoder import EncoderUNet
from carseg.utils.checks import check_int
from carseg.utils.errors import ConfigError, first_line

NEEDS_TIMM = "model/net=timm_unet needs timm: pip install -e '.[timm]'"


class TimmUNet(EncoderUNet):
    """U-Net over a timm encoder, returning logits ``(B, out_channels, H, W)`` for images
    ``(B, in_channels, H, W)``.

    Args:
        encoder: a timm model name that supports ``features_only`` (``resnet34``,
            ``efficientnet_b0``, ``convnext_tiny`` ...: ``timm.list_models()``).
        in_channels: image channels (timm adapts a pretrained first convolution to them).
        decoder_width: channels of the decoder's full-size step; each coarser step has twice as
            many.
        pretrained: start from timm's ImageNet weights, downloaded from the Hugging Face hub when
            they are not in its cache. It only initialises: a checkpoint's weights replace them.
        out_channels: one logit per class (1: car against background).

    Raises:
        ConfigError: timm is not installed, an unknown encoder or one without feature maps, or
            pretrained weights that could not be had.
    """

    def __init__(
        self,
        *,
        encoder: str,
        in_channels: int,
        decoder_width: int,
        pretrained: bool,
        out_channels: int = 1,
    ) -> None:
        check_int("model.net.in_channels", in_channels, 1)
        check_int("model.net.out_channels", out_channels, 1)
        if not isinstance(pretrained, bool):
            raise ConfigError(f"model.net.pretrained must be true or false, got {pretrained!r}")
        if not isinstance(encoder, str) or not encoder:
            raise ConfigError(f"model.net.encoder must name a timm model, got {encoder!r}")
        try:
            import timm
        except ModuleNotFoundError:
            raise ConfigError(NEEDS_TIMM) from None
        except Exception as err:  # installed, but it or torchvision fails beside this torch
            raise ConfigError(
                f"{NEEDS_TIMM}; import timm failed ({type(err).__name__}: {first_line(err)}): "
                "timm's torchvision must be the build that matches torch"
            ) from None
        try:
            backbone = timm.create_model(
                encoder, features_only=True, pretrained=pretrained, in_chans=in_channels
            )
        except (RuntimeError, ValueError, OSError) as err:
            # RuntimeError: an unknown name, or a model without features_only; OSError and
            # ValueError: the hub unreachable or its cache empty (pretrained=true only)
            hint = (
                "pretrained=true downloads the weights from the Hugging Face hub: run where it "
                "is reachable, or set model.net.pretrained=false"
                if pretrained
                else "timm.list_models() names the encoders; features_only must be supported"
            )
            raise ConfigError(f"model.net.encoder={encoder}: {first_line(err)} ({hint})") from None
        channels = list(backbone.feature_info.channels())
        reductions = list(backbone.feature_info.reduction())
        # pad to a multiple of the deepest reduction => encoder => decoder => crop back
        super().__init__(backbone, channels, reductions, decoder_width, out_channels)
