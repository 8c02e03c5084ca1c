"""The LightningModule: U-Net, loss, Adam, and the Carvana Dice, logged for TensorBoard.

Every argument is a plain number or string and is saved with ``save_hyperparameters()``, so a
checkpoint alone rebuilds the model (``SegmentationModule.load_from_checkpoint(path)``) and loads
with ``torch.load(weights_only=True)``. The arguments are ``conf/model/unet.yaml``'s keys, where
their defaults live.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from carseg.utils.checks import (
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
    check_threshold,
)
from carseg.utils.errors import TrainingDivergedError, first_line
from carseg.models.losses import SegmentationLoss
from carseg.models.metrics import carvana_dice
from carseg.models.unet import UNet

log = logging.getLogger(__name__)

SCHEDULERS = ("none", "cosine", "plateau")
SWITCH = (True, False, "auto")
# channels_last: auto turns it on where ``make bench`` measured it faster: CUDA (tensor cores
# want NHWC: 2x on an H200) and the CPU (see CPU_CHANNELS_LAST).
CPU_CHANNELS_LAST = True


def channels_last_on(setting: bool | str, device: torch.device) -> bool:
    """Whether ``model.channels_last`` (true, false or auto) means NHWC on ``device``."""
    if setting == "auto":
        return device.type == "cuda" or (device.type == "cpu" and CPU_CHANNELS_LAST)
    return bool(setting)


class SegmentationModule(pl.LightningModule):
    """Binary car segmentation with a U-Net returning one logit per pixel.

    Args:
        in_channels: image channels.
        base_width: U-Net channels at the first level (64 in the paper).
        depth: U-Net poolings.
        bilinear: bilinear upsampling (True) or transposed convolutions (False).
        batch_norm: BatchNorm after each convolution.
        loss: ``"bce"``, ``"bce_dice"`` or ``"bce_logdice"`` (see ``carseg.models.losses``).
        dice_weight: weight of the Dice term in the combined losses.
        lr: Adam's learning rate.
        weight_decay: Adam's L2 penalty.
        scheduler: ``"none"``, ``"cosine"`` (to zero over ``max_epochs``) or ``"plateau"`` (halve
            the rate when ``val/dice`` stalls for 2 epochs).
        threshold: probability above which a pixel is car, for the Dice metric.
        channels_last: keep weights and activations in NHWC memory layout: true, false, or
            ``"auto"`` (on where it is faster, see ``channels_last_on``). Results are the same.
        compile: run the training forward through ``torch.compile`` (validation and inference
            run eagerly). If compiling fails, training goes on eagerly with a warning.

    Checkpoints hold the plain module's weights in the usual layout whatever the switches, so a
    model trained with them loads and predicts without them.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_width: int,
        depth: int,
        bilinear: bool,
        batch_norm: bool,
        loss: str,
        dice_weight: float,
        lr: float,
        weight_decay: float,
        scheduler: str,
        threshold: float,
        channels_last: bool | str,
        compile: bool,
    ) -> None:
        super().__init__()
        check_int("model.in_channels", in_channels, 1)
        check_int("model.base_width", base_width, 1)
        check_int("model.depth", depth, 1)
        check_positive("model.lr", lr)
        check_non_negative("model.weight_decay", weight_decay)
        check_choice("model.scheduler", scheduler, SCHEDULERS)
        check_threshold("model.threshold", threshold)
        check_choice("model.channels_last", channels_last, SWITCH)
        self.save_hyperparameters()
        self.net = UNet(in_channels, 1, base_width, depth, bilinear, batch_norm)
        self.criterion = SegmentationLoss(loss, dice_weight)
        self.val_dice = carvana_dice()
        self._channels_last = False  # resolved for the device in setup() / place_on()
        self._compiled: torch.nn.Module | None = None  # set in setup() when compiling
        self._losses: list[tuple[torch.Tensor, int]] = []  # (loss, batch) since the last step

    def place_on(self, device: str | torch.device) -> SegmentationModule:
        """Move to ``device`` in the memory layout ``channels_last`` means there."""
        device = torch.device(device)
        self._channels_last = channels_last_on(self.hparams.channels_last, device)
        layout = torch.channels_last if self._channels_last else torch.contiguous_format
        return self.to(device=device, memory_format=layout)

    def setup(self, stage: str) -> None:
        self.place_on(self.trainer.strategy.root_device)
        if self.hparams.compile and self._compiled is None:
            # Kept out of _modules so the checkpoint holds the plain module's weights only.
            self.__dict__["_compiled"] = torch.compile(self.net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` for normalised images ``(B, C, H, W)``."""
        if self._channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self._compiled is not None and self.training:
            try:
                return self._compiled(images)
            except Exception as err:  # a compiler that fails here fails for every batch
                log.warning(
                    "torch.compile failed (%s: %s); training goes on without it (model.compile)",
                    type(err).__name__,
                    first_line(err),
                )
                self.__dict__["_compiled"] = None
        return self.net(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, masks = batch
        loss = self.criterion(self(images), masks)
        # Checked in on_before_optimizer_step: testing it here would make the CPU wait for the
        # GPU's forward pass before it may queue the backward pass, every step.
        self._losses.append((loss.detach(), batch_idx))
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=images.shape[0],
        )
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before the optimiser writes NaN into the weights; checkpoints stay as they were.

        Every process stops: the gradients are averaged across processes, so a NaN on one is a
        NaN on all of them. The losses of every batch accumulated into this step are checked.
        """
        losses, self._losses = self._losses, []
        if not losses:
            return
        bad = bool(torch.stack([~torch.isfinite(loss) for loss, _ in losses]).any())
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        where = next(((x.item(), b) for x, b in losses if not torch.isfinite(x)), None)
        what = (
            f"The training loss became {where[0]} at epoch {self.current_epoch}, batch {where[1]}"
            if where
            else f"Another process's training loss became non-finite at epoch {self.current_epoch}"
        )
        raise TrainingDivergedError(
            f"{what} (global step {self.global_step}). Lower model.lr, or check the data for "
            "broken images"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain weights in the usual (NCHW) layout, whatever layout training used."""
        checkpoint["state_dict"] = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, masks = batch
        logits = self(images)
        # Logged per batch and averaged by Lightning weighted by batch size: the mean over images.
        self.log(
            "val/loss",
            self.criterion(logits, masks),
            on_epoch=True,
            batch_size=images.shape[0],
            sync_dist=True,
        )
        preds = (torch.sigmoid(logits) > self.hparams.threshold).long()
        self.val_dice.update(preds, masks.long())
        # Logging the Metric object lets torchmetrics compute once over the whole validation set.
        self.log("val/dice", self.val_dice, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        # On CUDA one fused kernel updates every parameter (Lightning has moved the model there);
        # Lightning's mixed precision cannot clip a fused optimiser's gradients, so not then.
        clipping = self._trainer is not None and self.trainer.gradient_clip_val
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=True if self.device.type == "cuda" and not clipping else None,
        )
        if self.hparams.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, self.trainer.max_epochs or 1)
            )
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        if self.hparams.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.5, patience=2
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/dice"},
            }
        return optimizer
