"""TensorBoard HPARAMS: each run's hyperparameters with its best and final metrics, so the runs of a
sweep compare side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl

from carseg.training.best import BestTracker, tracker_of
from carseg.training.callbacks.tensorboard import log_step, tensorboard_loggers


def _flatten(prefix: str, params: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    for key, value in params.items():
        if str(key) in ("_partial_", "_recursive_", "_convert_"):
            continue  # how Hydra builds a node, not a setting
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            _flatten(name, value, out)
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:  # lists and anything else: HPARAMS shows numbers, strings and booleans only
            out[name] = str(list(value)) if isinstance(value, list | tuple) else str(value)
    return out


class HyperparameterLogger(pl.Callback):
    """The run's hyperparameters and final metrics in TensorBoard's HPARAMS tab.

    At the start of ``fit`` it writes the HPARAMS summary (the model's and the data's
    hyperparameters as ``model.<name>`` and ``data.<name>``, the way a Hydra override names them,
    plus ``trainer.max_epochs`` and ``trainer.precision``) with the metrics below at their
    starting values; after every validation epoch it logs them as scalars, so the HPARAMS table
    shows their latest values. The TensorBoard logger's own ``hp_metric`` stays off
    (``default_hp_metric: false``): Lightning writes the HPARAMS summary only when metrics come
    with the hyperparameters.

    Metrics: ``hp/best_val_dice`` (the best ``monitor`` value so far; the name keeps
    ``val_dice`` whatever is monitored, for one HPARAMS column across runs), ``hp/best_epoch``,
    ``hp/final_val_loss`` and ``hp/final_train_loss`` (the last epoch's).

    In a sweep TensorBoard lists the hyperparameters that differ between runs first. Lightning's
    ``hparams.yaml`` in the log folder gets the dotted names too (``log_hyperparams`` keeps them).

    Args:
        monitor: the metric whose best value is reported.
        mode: ``"max"`` or ``"min"``.
        exclude: hyperparameters left out, by name or name prefix.
    """

    METRICS = ("hp/best_val_dice", "hp/best_epoch", "hp/final_val_loss", "hp/final_train_loss")

    def __init__(self, *, monitor: str, mode: str, exclude: Sequence[str]) -> None:
        self.tracker = BestTracker(monitor, mode)  # the run's, once fit starts
        self.exclude = tuple(exclude)

    def hyperparameters(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The flat ``{name: number, string or bool}`` that HPARAMS shows for this run."""
        params = _flatten("model", dict(pl_module.hparams), {})
        if trainer.datamodule is not None:
            _flatten("data", dict(trainer.datamodule.hparams), params)
        params["trainer.max_epochs"] = trainer.max_epochs
        params["trainer.precision"] = str(trainer.precision)
        return {
            name: value
            for name, value in params.items()
            if not any(name == x or name.startswith(x + ".") for x in self.exclude)
        }

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker = tracker_of(trainer, self.tracker.monitor, self.tracker.mode)
        self.tracker.reset()
        if trainer.fast_dev_run:
            return
        start = {name: 0.0 for name in self.METRICS}
        start["hp/best_epoch"] = -1.0  # no epoch yet
        for logger in tensorboard_loggers(trainer):
            logger.log_hyperparams(self.hyperparameters(trainer, pl_module), start)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        self.tracker.update(trainer)
        loggers = tensorboard_loggers(trainer)
        if not loggers or self.tracker.best is None:
            return
        metrics = {"hp/best_val_dice": self.tracker.best, "hp/best_epoch": self.tracker.best_epoch}
        for key, name in (
            ("val/loss", "hp/final_val_loss"),
            ("train/loss_epoch", "hp/final_train_loss"),
        ):
            if key in trainer.callback_metrics:
                metrics[name] = float(trainer.callback_metrics[key])
        for logger in loggers:
            logger.log_metrics(metrics, step=log_step(trainer))
