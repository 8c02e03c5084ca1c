"""The frame every network of carseg runs in: pad the input to the net's ``multiple``, run the net,
crop the logits back to the input's size.

A U-Net halves its maps ``k`` times and doubles them back, so its input's sides must be multiples
of ``2**k`` for the skips to meet maps of their own size. Rather than refusing other sizes, every
network pads the bottom and right edges (repeating the edge pixels) up to its ``multiple`` and
crops the logits back, so that any size in gives logits of that size out, aligned pixel for pixel
with the input. ``FramedNet`` does this once for every network: the plain U-Net
(``carseg.models.unet``) and the encoder U-Nets (``carseg.models.decoder.EncoderUNet``) supply
only their ``body``; export (``carseg.inference.export``) reads the same ``multiple`` and
``MAX_SIDE``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carseg.utils.checks import MAX_SIDE, check_int


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right edges up to multiples of ``multiple`` by repeating the edge.

    Always a pad (of zero where the size fits) and always one mode, so that an exported graph
    (ONNX, torch.export) stays valid for every input size rather than the traced one's.
    """
    height, width = x.shape[-2:]
    pad = [0, -width % multiple, 0, -height % multiple]  # left, right, top, bottom
    return F.pad(x, pad, mode="replicate")


class FramedNet(nn.Module):
    """pad to ``multiple`` => ``body`` => crop to the input's size.

    A subclass builds its layers and defines ``body``, which sees ``(B, C, H', W')`` with ``H'``
    and ``W'`` multiples of ``multiple`` and returns logits ``(B, out_channels, H', W')``;
    ``forward`` gives logits ``(B, out_channels, H, W)`` for images ``(B, C, H, W)`` of any size
    up to ``MAX_SIDE`` pixels a side.

    Args:
        multiple: the sides ``body`` needs: ``2**k`` for a net that halves its maps ``k`` times.
    """

    def __init__(self, multiple: int) -> None:
        super().__init__()
        check_int("the network's multiple", multiple, 1)
        self.multiple = multiple  # input sides are padded up to multiples of this
        self.max_side = MAX_SIDE  # an attribute: TorchScript reads no global int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if max(height, width) > self.max_side:  # tens of GB of activations before the first layer
            raise ValueError(
                f"images of {height}x{width} pixels: a network takes at most {self.max_side} "
                "pixels a side; resize them (size=[h,w]) or predict in tiles (tile=[h,w])"
            )
        logits = self.body(pad_to_multiple(x, self.multiple))  # (B, out_channels, H', W')
        return logits[..., :height, :width]

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H', W')`` of images whose sides are multiples of
        ``multiple``."""
        raise NotImplementedError(f"{type(self).__name__} defines no body")

    @torch.jit.unused
    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size ``body`` sees for an input of ``height`` x ``width``."""
        return height + -height % self.multiple, width + -width % self.multiple
