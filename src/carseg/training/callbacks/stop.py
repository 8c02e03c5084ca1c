"""Every run ends with a model: a run stopped by its budget, by SIGTERM or by Ctrl-C validates the
weights it has and its checkpoint callbacks save them, whatever point of an epoch it is at.

Lightning validates before it stops when something asks it to stop (``trainer.should_stop``: its
``Timer`` for ``trainer.max_time``, early stopping), but not when ``trainer.max_steps`` ends an
epoch half-way, nor at the end of the last epoch when validation runs on a time interval
(``trainer.val_check_interval="00:00:02:00"``); and a SIGTERM or a Ctrl-C stops it at once,
with nothing saved since the last validation. ``StopCleanly`` turns each of these into a stop
after the batch at hand: the validation runs, the checkpoint callbacks save ``last.ckpt`` and the
best so far, and the fit returns. A second signal stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, Timer
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopCleanly(pl.Callback):
    """Stop after the batch at hand, validating and saving, when the run is about to end.

    ``reason`` says what ended the fit (``stop_reason`` reads it), ``signal`` the signal that
    asked for it (``"SIGTERM"``, ``"SIGINT"``), if one did.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None

    # -- signals ---------------------------------------------------------------------------
    # Taken over once Lightning has set its own handlers (after on_fit_start), from the sanity
    # check on; Lightning's would end the fit with SIGTERMException, saving nothing.
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_signals(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_signals(trainer)

    def _take_signals(self, trainer: pl.Trainer) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signal = self.reason = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        self._trainer = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:  # asked twice: stop now, saving nothing more
            log.warning("%s again: stopping at once", name)
            self.teardown(self._trainer, None, "fit")  # type: ignore[arg-type]
            raise KeyboardInterrupt
        self.signal = name
        log.warning(
            "%s: training stops after this batch, validates and saves its checkpoints "
            "(send it again to stop at once)",
            name,
        )
        trainer = self._trainer
        launcher = trainer.strategy.launcher if trainer is not None else None
        if launcher is not None:  # the other processes of a DDP run Lightning started
            launcher.kill(signum)

    # -- stopping ------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        reason = self._ending(trainer)
        if trainer.world_size > 1:  # every process stops at the same batch
            stop = trainer.strategy.reduce_boolean_decision(reason is not None, all=False)
            reason = reason or ("another process" if stop else None)
        if reason is not None:
            self.reason = self.reason or reason
            # Lightning validates before a requested stop (its checkpoint callbacks save then)
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signal is not None and not trainer.sanity_checking:  # a signal while validating
            self.reason = self.reason or self.signal
            trainer.should_stop = True

    def _ending(self, trainer: pl.Trainer) -> str | None:
        """Why training ends after this batch, where Lightning would not validate first."""
        if self.signal is not None:
            return self.signal
        if 0 <= trainer.max_steps <= trainer.global_step:
            return "max_steps"
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        max_epochs = trainer.max_epochs
        if last_batch and max_epochs is not None and 0 <= max_epochs <= trainer.current_epoch + 1:
            return "max_epochs"
        return None


def stop_reason(trainer: pl.Trainer) -> str | None:
    """What ended a fit: ``"max_time"``, ``"max_steps"``, ``"max_epochs"``, ``"early_stopping"``,
    ``"SIGTERM"``, ``"SIGINT"``, or None while it runs."""
    callbacks = trainer.callbacks
    stopper = next((c for c in callbacks if isinstance(c, StopCleanly)), None)
    if stopper is not None and stopper.signal is not None:
        return stopper.signal
    timer = next((c for c in callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        return "max_time"
    stopped = (c for c in callbacks if isinstance(c, EarlyStopping))
    if any(c.stopping_reason != EarlyStoppingReason.NOT_STOPPED for c in stopped):
        return "early_stopping"
    return stopper.reason if stopper is not None else None
