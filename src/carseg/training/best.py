"""A run's best score and its epoch: what ``train.py`` prints, ``summary.json`` records and HPARAMS
shows, all read from one tracker.

The checkpoint callback that monitors the metric is the authority (it also knows the best of the
epochs before a resume: the epoch is read from its best checkpoint); without one, the best value
seen in this process is used. ``training.train`` adds one ``BestTracker`` to every run; the
callbacks that report the best score read it (``tracker_of``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from carseg.training.checkpoint_reader import read_checkpoint
from carseg.utils.checks import check_choice

MODES = ("max", "min")


class BestTracker(pl.Callback):
    """The best value of a logged metric over this fit's validations, and its epoch and step.

    A callback of its own (``training.train`` adds one). The callbacks that report the best score
    share it (``tracker_of``) and call ``update`` from their own hooks too, so that it is current
    whichever hook runs first: a validation is counted once.
    """

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor = monitor
        self.mode = check_choice("mode", mode, MODES)
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self._seen: tuple[int, int] | None = None  # (epoch, step) of the validation last read

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.reset()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.update(trainer)

    def update(self, trainer: pl.Trainer) -> bool:
        """Read the monitored value after a validation epoch; True if it improved (once: a
        second call for the same validation changes nothing and returns False)."""
        validation = (trainer.current_epoch, trainer.global_step)
        if validation == self._seen:
            return False
        self._seen = validation
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or math.isnan(float(value)):
            return False
        value = float(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.best_epoch = value, trainer.current_epoch
            self.best_step = trainer.global_step
            return True
        return False


def tracker_of(trainer: pl.Trainer, monitor: str, mode: str) -> BestTracker:
    """The trainer's tracker of ``monitor`` and ``mode`` (``training.train`` adds one to every
    run), or, for a Trainer built without one, a new tracker that the caller updates."""
    trackers = [c for c in trainer.callbacks if isinstance(c, BestTracker)]
    same = [t for t in trackers if (t.monitor, t.mode) == (monitor, mode)]
    return same[0] if same else BestTracker(monitor, mode)


@dataclass(frozen=True)
class Best:
    """The best score of a run, its epoch, and the checkpoints kept."""

    score: float | None
    epoch: int | None
    step: int | None  # the optimiser steps taken when it was measured
    checkpoint: str | None  # absolute path of the best checkpoint, if one was saved
    last_checkpoint: str | None


def best_of(trainer: pl.Trainer, tracker: BestTracker) -> Best:
    """The run's best ``tracker.monitor``: the checkpoint callback's when it monitors the same
    metric and saved a checkpoint, else the tracker's."""
    score, epoch, step = tracker.best, tracker.best_epoch, tracker.best_step
    best_path = last_path = None
    for callback in trainer.checkpoint_callbacks:  # the one without a monitor keeps the newest
        if isinstance(callback, ModelCheckpoint) and callback.monitor is None:
            last_path = callback.best_model_path or callback.last_model_path or None
    monitoring = [c for c in trainer.checkpoint_callbacks if c.monitor == tracker.monitor]
    # without one that monitors the metric: the checkpoint Lightning kept (the default: the newest)
    callback = monitoring[0] if monitoring else trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint):
        best_path = callback.best_model_path or None
        last_path = last_path or callback.last_model_path or None
        saved = callback.best_model_score
        same = callback.monitor == tracker.monitor and saved is not None and best_path
        if same and (score is None or float(saved) != score):  # resumed: the best is from before
            raw = read_checkpoint(best_path)
            score, epoch, step = float(saved), int(raw["epoch"]), raw.get("global_step")
    return Best(
        score=score,
        epoch=epoch,
        step=step,
        checkpoint=str(Path(best_path).resolve()) if best_path else None,
        last_checkpoint=str(Path(last_path).resolve()) if last_path else None,
    )
