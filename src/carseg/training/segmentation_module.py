"""The LightningModule: a network, its loss, optimiser and schedule, and the Carvana Dice, logged
for TensorBoard.

The network, optimiser, schedule and loss are config nodes (``conf/model/net``, ``optimizer``,
``scheduler``, ``loss``) saved with ``save_hyperparameters()`` as plain values, so a checkpoint
alone rebuilds the model (``carseg.inference.loading.load_model``) and loads with
``torch.load(weights_only=True)``. Their ``_target_`` is looked up in carseg's registries
(``carseg.models.registry``), never imported from a checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from carseg.models.metrics import carvana_dice
from carseg.models.registry import LOSSES, NETS
from carseg.training.optim import (
    build_optimizer,
    build_scheduler,
    check_optimizer,
    check_scheduler,
)
from carseg.utils.checks import check_choice, check_threshold
from carseg.utils.errors import ConfigError, TrainingDivergedError, first_line

log = logging.getLogger(__name__)

SWITCH = (True, False, "auto")
IMAGE_CHANNELS = 3  # every image is read as RGB (carseg.data.image_io)
# channels_last: auto turns it on where ``make bench`` measured it faster: CUDA (tensor cores
# want NHWC: 2x on an H200) and the CPU (see CPU_CHANNELS_LAST).
CPU_CHANNELS_LAST = True


def channels_last_on(setting: bool | str, device: torch.device) -> bool:
    """Whether ``model.channels_last`` (true, false or auto) means NHWC on ``device``."""
    if setting == "auto":
        return device.type == "cuda" or (device.type == "cpu" and CPU_CHANNELS_LAST)
    return bool(setting)


def plain(node: Any, key: str) -> dict[str, Any]:
    """A config node as a plain dict (what a checkpoint can hold).

    Raises:
        ConfigError: not a node: an old spelling such as ``model.loss=bce_dice``.
    """
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        group = key.replace(".", "/")
        raise ConfigError(
            f"{key}={node!r}: {key} is a config group now, chosen with {group}=<name> "
            f"(e.g. {group}={node}), its options set with {key}.<option>=..."
        )
    return dict(node)


class SegmentationModule(pl.LightningModule):
    """Binary car segmentation with a network returning one logit per pixel.

    Args:
        net: the network's node (``conf/model/net/``): ``_target_`` and its arguments.
        optimizer: the optimiser's node (``conf/model/optimizer/``).
        scheduler: the schedule's node (``conf/model/scheduler/``); empty: a constant rate.
        loss: the loss's node (``conf/model/loss/``).
        threshold: probability above which a pixel is car, for the Dice metric.
        channels_last: keep weights and activations in NHWC memory layout: true, false, or
            ``"auto"`` (on where it is faster, see ``channels_last_on``). Results are the same.
        compile: run the training forward through ``torch.compile`` (validation and inference
            run eagerly). If compiling fails, training goes on eagerly with a warning.
        inference: build the network alone, for inference from a checkpoint: the loss,
            optimiser and schedule nodes are kept as values, never built nor looked up (a
            checkpoint's nodes are untrusted input, and inference has no use for them).

    Checkpoints hold the plain module's weights in the usual layout whatever the switches, so a
    model trained with them loads and predicts without them.
    """

    def __init__(
        self,
        *,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None,
        loss: Mapping[str, Any],
        threshold: float,
        channels_last: bool | str,
        compile: bool,
        inference: bool = False,
    ) -> None:
        super().__init__()
        net, optimizer = plain(net, "model.net"), plain(optimizer, "model.optimizer")
        scheduler, loss = plain(scheduler, "model.scheduler"), plain(loss, "model.loss")
        check_threshold("model.threshold", threshold)
        check_choice("model.channels_last", channels_last, SWITCH)
        if net.get("in_channels", IMAGE_CHANNELS) != IMAGE_CHANNELS:
            raise ConfigError(
                f"model.net.in_channels={net['in_channels']!r}: carseg feeds the network RGB "
                f"images, {IMAGE_CHANNELS} channels (grey photos are read as RGB too): set "
                f"model.net.in_channels={IMAGE_CHANNELS}"
            )
        if not inference:
            check_optimizer(optimizer)
            check_scheduler(scheduler)
        self.save_hyperparameters(
            {
                "net": net,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "loss": loss,
                "threshold": threshold,
                "channels_last": channels_last,
                "compile": compile,
            }
        )
        self.net = NETS.build(net)
        self.criterion = None if inference else LOSSES.build(loss)
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
            f"{what} (global step {self.global_step}). Lower model.optimizer.lr, or check the "
            "data for broken images"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain weights in the usual (NCHW) layout, whatever layout training used. (What
        inference needs beside them, carseg's record, is written by
        ``carseg.training.callbacks.record.CheckpointRecorder``.)"""
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
        fused = self.device.type == "cuda" and not clipping
        optimizer = build_optimizer(self.hparams.optimizer, self.parameters(), fused=fused)
        schedule = build_scheduler(self.hparams.scheduler, optimizer, self.trainer)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}
