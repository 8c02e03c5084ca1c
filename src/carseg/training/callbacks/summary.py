"""``summary.json``: what a run reached, how long it took, and from which commit.

``carseg.runs.sweep_report`` reads it to rank the jobs of a sweep.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from carseg.training.best import BestTracker, best_of, tracker_of
from carseg.training.callbacks.stop import stop_reason
from carseg.utils.atomic import write_json

log = logging.getLogger(__name__)

# The folder holding src/carseg: the checkout whose commit a run records.
CODE_DIR = Path(__file__).resolve().parents[4]


def git_commit(folder: str | Path) -> dict[str, Any]:
    """``{"commit": <HEAD's hash> or None, "dirty": bool or None}`` for a folder of a checkout.

    None when git is not installed or ``folder`` is not inside a git checkout; ``dirty`` is True
    when tracked files differ from the commit or untracked files are there (``git status``).
    """
    git = shutil.which("git")
    if git is None or not Path(folder).is_dir():
        return {"commit": None, "dirty": None}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [git, *args], cwd=folder, capture_output=True, text=True, timeout=30, check=False
        )

    head = run("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = run("status", "--porcelain")
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": head.stdout.strip(), "dirty": dirty}


class RunSummary(pl.Callback):
    """Write ``summary.json`` into the run folder when ``fit`` ends (or fails).

    Keys: ``status`` (``running`` from the start of ``fit``, then ``completed``, ``failed`` or
    ``interrupted``: stopped by SIGTERM or Ctrl-C, its checkpoints saved or not), ``stopped_by``
    (what ended it: ``max_time``, ``max_steps``, ``max_epochs``, ``early_stopping``, ``SIGTERM``,
    ``SIGINT``), ``monitor``, ``best_score``, ``best_epoch`` and ``best_step`` (the best value of
    ``monitor`` and when; from the checkpoint callback when it monitors the same metric, which
    also covers a resumed run), ``best_val_dice`` (``best_score`` when ``monitor`` is
    ``val/dice``, else None), ``validations`` (how many this process ran) and
    ``val_check_interval`` (when: ``trainer.val_check_interval``), ``epochs_run`` (passes over
    the training set, a fraction for a run stopped inside an epoch),
    ``global_step``, ``wall_time_s`` (from the start of the fit loop, after the data's setup, to
    its end), ``train_images``, ``train_time_s`` (training batches only: loading and the
    optimiser step included, validation excluded) and ``train_images_per_s``,
    ``best_checkpoint``, ``last_checkpoint``, ``git_commit``, ``git_dirty``, ``started``,
    ``finished`` (ISO times), ``host`` and ``pid`` (the process that trained) and, for a failed
    run, ``error``.

    Args:
        output_dir: the run folder (Hydra's ``${paths.output_dir}``).
        monitor: the metric that ranks the epochs.
        mode: ``"max"`` or ``"min"``.
        code_dir: the checkout whose commit is recorded; None: the one holding this package.
        filename: the file's name in ``output_dir``.
    """

    def __init__(
        self,
        *,
        output_dir: str | Path,
        monitor: str,
        mode: str,
        code_dir: str | Path | None = None,
        filename: str = "summary.json",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / filename
        self.tracker = BestTracker(monitor, mode)  # the run's, once fit starts
        self.code_dir = Path(code_dir) if code_dir is not None else CODE_DIR
        self._reset()

    def _reset(self) -> None:
        self.tracker.reset()
        self._fit_start = time.perf_counter()
        self._started = datetime.now(timezone.utc)
        self._train_images = 0
        self._train_time = 0.0
        self._epoch_start: float | None = None
        self._last_batch_end: float | None = None
        self._val_time_in_epoch = 0.0
        self._val_time_in_epoch_at_last_batch = 0.0
        self._val_start: float | None = None
        self._validations = 0

    # timing: the span from an epoch's start to its last training batch, less any validation
    # that ran inside it (val_check_interval < 1)
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker = tracker_of(trainer, self.tracker.monitor, self.tracker.mode)
        self._reset()
        # "running" until the fit ends: a job killed outright (SIGKILL, a lost node) leaves this,
        # with its process and host, for carseg.runs.sweep_report to tell from a job still running
        self._write(trainer, "running")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._last_batch_end = None
        self._val_time_in_epoch = self._val_time_in_epoch_at_last_batch = 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._last_batch_end = time.perf_counter()
        self._val_time_in_epoch_at_last_batch = self._val_time_in_epoch
        images = batch[0] if isinstance(batch, list | tuple) else batch
        if isinstance(images, torch.Tensor):
            self._train_images += int(images.shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()

    def _close_epoch(self) -> None:
        if self._epoch_start is not None and self._last_batch_end is not None:
            span = self._last_batch_end - self._epoch_start
            self._train_time += max(0.0, span - self._val_time_in_epoch_at_last_batch)
        self._epoch_start = self._last_batch_end = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is not None:
            self._val_time_in_epoch += time.perf_counter() - self._val_start
            self._val_start = None
        if not trainer.sanity_checking:
            self._validations += 1
            self.tracker.update(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signalled = stop_reason(trainer) in ("SIGTERM", "SIGINT")
        self._write(trainer, "interrupted" if signalled else "completed")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        try:
            self._write(trainer, status, error=f"{type(exception).__name__}: {exception}")
        except Exception as err:  # never hide the exception that stopped the run behind ours
            log.warning("Could not write %s after the run failed: %s", self.path, err)

    def summary(self, trainer: pl.Trainer, status: str) -> dict[str, Any]:
        """What ``summary.json`` holds, as a dict of plain values."""
        self._close_epoch()
        best = best_of(trainer, self.tracker)
        wall = time.perf_counter() - self._fit_start
        git = git_commit(self.code_dir)
        return {
            "status": status,
            "stopped_by": None if status == "running" else stop_reason(trainer),
            "monitor": self.tracker.monitor,
            "best_score": best.score,
            "best_val_dice": best.score if self.tracker.monitor == "val/dice" else None,
            "best_epoch": best.epoch,
            "best_step": best.step,
            "validations": self._validations,
            "val_check_interval": _val_check_interval(trainer),
            "epochs_run": epochs_run(trainer),
            "global_step": trainer.global_step,
            "wall_time_s": round(wall, 3),
            "train_images": self._train_images,
            "train_time_s": round(self._train_time, 3),
            "train_images_per_s": (
                round(self._train_images / self._train_time, 3) if self._train_time > 0 else None
            ),
            "best_checkpoint": best.checkpoint,
            "last_checkpoint": best.last_checkpoint,
            "git_commit": git["commit"],
            "git_dirty": git["dirty"],
            "started": self._started.isoformat(timespec="milliseconds"),
            "finished": (
                None
                if status == "running"
                else datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            ),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def _write(self, trainer: pl.Trainer, status: str, error: str | None = None) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        content = self.summary(trainer, status)
        if error is not None:
            content["error"] = error
        write_json(self.path, content)
        if status != "running":
            log.info("Run summary written to %s", self.path)


def epochs_run(trainer: pl.Trainer) -> float | int:
    """The passes over the training set the run's steps made (2.3: two epochs and a third),
    resumed ones included; Lightning's epoch count where an epoch's length is unknown."""
    batches = trainer.num_training_batches
    if not isinstance(batches, int) or batches <= 0:
        return trainer.current_epoch
    return round(trainer.global_step * trainer.accumulate_grad_batches / batches, 2)


def _val_check_interval(trainer: pl.Trainer) -> str | float | int:
    """When the run validates: a time in seconds (``"120 s"``), a share of an epoch, or a number
    of batches, as Lightning read ``trainer.val_check_interval``."""
    seconds = getattr(trainer, "_val_check_time_interval", None)
    return f"{seconds:g} s" if seconds is not None else trainer.val_check_interval


def record_failure(
    output_dir: str | Path, error: BaseException, filename: str = "summary.json"
) -> None:
    """A ``summary.json`` for a run that failed before ``fit`` began (a bad option, missing data),
    so a sweep's report says why; one that ``RunSummary`` wrote is kept."""
    path = Path(output_dir) / filename
    if path.exists():
        return
    cause = error.__cause__ if type(error).__name__ == "InstantiationException" else error
    write_json(
        path,
        {
            "status": "failed",
            "error": f"{type(cause).__name__}: {cause}",
            "best_val_dice": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        },
    )
