"""Lightning pieces for tests: a quiet Trainer, and callbacks that break a run on purpose or
record what each process saw."""

from __future__ import annotations

import os
from pathlib import Path


def quiet_trainer(max_epochs: int, **options):
    """A CPU Lightning Trainer without logger, progress bar or model summary, for unit tests."""
    import pytorch_lightning as pl

    defaults = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}  # fmt: skip
    return pl.Trainer(max_epochs=max_epochs, **{**defaults, **options})


def poison_batch_callback(epoch: int, batch: int = 0):
    """A Lightning callback that fills one training batch with NaN, as a broken step would."""
    import pytorch_lightning as pl

    class PoisonBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, data, batch_idx):
            if trainer.current_epoch == epoch and batch_idx == batch:
                data[0].fill_(float("nan"))

    return PoisonBatch()


def rank_metrics_callback(folder: str):
    """A Lightning callback that writes each process's final metrics to ``rank<N>.json``."""
    import json

    import pytorch_lightning as pl

    class DumpRankMetrics(pl.Callback):
        def on_fit_end(self, trainer, pl_module):
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            record = {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "metrics": metrics,
                "val_images_seen": len(trainer.val_dataloaders.sampler),
            }
            path = Path(folder) / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps(record))

    return DumpRankMetrics()


def kill_at_epoch(epoch: int):
    """A Lightning callback that kills its own process (SIGKILL) when ``epoch`` starts, as an
    out-of-memory killer or a lost node would: nothing gets to write that it ended."""
    import signal

    import pytorch_lightning as pl

    class Killer(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    return Killer()


def signal_at(batch: int, signum: int, epoch: int = 0, times: int = 1):
    """A Lightning callback that sends its own process ``signum`` (``times`` times) when training
    batch ``batch`` of ``epoch`` starts, as a scheduler's SIGTERM or a user's Ctrl-C would."""
    import signal

    import pytorch_lightning as pl

    class SignalAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, data, batch_idx):
            if trainer.current_epoch == epoch and batch_idx == batch:
                for _ in range(times):
                    os.kill(os.getpid(), signal.Signals(signum))

    return SignalAt()


def slow_batches(seconds: float):
    """A Lightning callback that makes every training batch take ``seconds`` longer: a slow CPU,
    on which a time budget ends inside an epoch."""
    import time

    import pytorch_lightning as pl

    class SlowBatches(pl.Callback):
        def on_train_batch_end(self, *args, **kwargs):
            time.sleep(seconds)

    return SlowBatches()
