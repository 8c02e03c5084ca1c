"""Build the Trainer, data and model from a composed config, and train: the library behind train.py.

Everything here takes plain configs and returns plain values, so tests call it without Hydra's
command line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from carseg.errors import ConfigError, TrainingDivergedError
from carseg.inference import read_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    best_score: float | None  # best value of the monitored metric (val/dice), None if never run
    best_epoch: int | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    epochs_run: int
    log_dir: str | None  # where the TensorBoard event files are, if a TensorBoard logger ran
    global_rank: int = 0  # this process's rank (DDP); only rank 0 reports


def resolve_trainer_config(trainer: Mapping[str, Any], multirun: bool = False) -> dict[str, Any]:
    """Translate the Lightning 1 ``gpus`` key and check that the devices asked for exist.

    ``gpus=N`` (N >= 1) means ``accelerator="gpu", devices=N``; ``gpus=0`` means the CPU;
    a list ``[0, 2]`` picks those GPUs. Lightning 2 removed the key; users still type it.

    Raises:
        ConfigError: GPUs asked for that this machine does not have, a malformed ``gpus``, or a
            DDP strategy inside a Hydra multirun (the second process would re-run the sweep).
    """
    cfg = dict(trainer)
    gpus = cfg.pop("gpus", None)
    if gpus is not None:
        if isinstance(gpus, bool) or not (
            (isinstance(gpus, int) and gpus >= 0)
            or (isinstance(gpus, list | tuple) and all(isinstance(g, int) for g in gpus))
        ):
            raise ConfigError(
                f"trainer.gpus={gpus!r}: give a number of GPUs (trainer.gpus=1, or 0 for the CPU) "
                "or a list of GPU indices (trainer.gpus=[0,1])"
            )
        if gpus == 0 or gpus == []:
            cfg["accelerator"], cfg["devices"] = "cpu", 1
        else:
            cfg["accelerator"], cfg["devices"] = (
                "gpu",
                list(gpus) if isinstance(gpus, list | tuple) else gpus,
            )

    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        _check_gpus(cfg.get("devices", "auto"))
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps, but MPS (Apple GPU) is not available here")

    if cfg.get("sync_batchnorm") and not (
        accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    ):
        raise ConfigError(
            "trainer.sync_batchnorm=true needs CUDA GPUs (PyTorch's SyncBatchNorm); "
            "set trainer.sync_batchnorm=false to train on the CPU"
        )

    strategy = str(cfg.get("strategy", "auto"))
    if multirun and strategy.startswith("ddp") and not strategy.startswith("ddp_spawn"):
        raise ConfigError(
            f"trainer.strategy={strategy} re-launches this script, which in a Hydra multirun (-m) "
            "re-runs the whole sweep in every process. Use trainer.strategy=ddp_spawn in sweeps, "
            "or run the DDP job on its own without -m."
        )
    return cfg


def _check_gpus(devices: Any) -> None:
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if isinstance(devices, list | tuple):
        wanted = len(devices)
    elif devices in ("auto", -1, "-1", None):
        wanted = 1
    else:
        wanted = int(devices)
    if available == 0:
        why = (
            "this PyTorch is a CPU-only build"
            if torch.version.cuda is None
            else "CUDA finds no GPU (check the driver and CUDA_VISIBLE_DEVICES)"
        )
        raise ConfigError(
            f"{wanted} GPU(s) asked for (trainer.gpus / trainer.accelerator=gpu), but this machine "
            f"has none: {why}. Train on the CPU with trainer=cpu (or trainer.gpus=0)."
        )
    if wanted > available:
        raise ConfigError(
            f"{wanted} GPUs asked for, but only {available} are available: "
            f"use trainer.gpus={available} or fewer"
        )


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (None entries skipped)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def train(cfg: DictConfig, multirun: bool = False) -> TrainResult:
    """Train the model that ``cfg`` describes (the composed ``conf/train.yaml``).

    Args:
        cfg: keys ``model``, ``data``, ``trainer``, ``callbacks``, ``logger``, ``seed``,
            ``ckpt_path`` (a checkpoint to resume from, or None), ``paths.output_dir``.
        multirun: whether this runs as one job of a Hydra sweep.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    trainer_cfg = resolve_trainer_config(
        OmegaConf.to_container(cfg.trainer, resolve=True), multirun=multirun
    )
    # _convert_="all": plain lists and dicts, so the saved hyperparameters load with
    # torch.load(weights_only=True).
    datamodule: pl.LightningDataModule = instantiate(cfg.data, _convert_="all")
    model: pl.LightningModule = instantiate(cfg.model, _convert_="all")
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not loggers:
        dropped = [c for c in callbacks if isinstance(c, LearningRateMonitor)]
        if dropped:
            log.info("No logger configured: the learning-rate monitor is left out")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]

    ckpt_path = resolve_ckpt_path(
        cfg.get("ckpt_path"),
        output_dir=Path(cfg.paths.output_dir),
        runs_dir=Path(cfg.paths.log_dir) / cfg.task_name / "runs",
    )
    trainer: pl.Trainer = instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        _convert_="all",
    )
    try:
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    except TrainingDivergedError as err:
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        raise TrainingDivergedError(f"{err}.\nThe last good checkpoint is kept: {last}") from None
    return _result(trainer)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, runs_dir: Path) -> str | None:
    """The checkpoint to resume from, checked to load safely; None to start afresh.

    ``"last"`` means this run folder's ``checkpoints/last.ckpt`` (when the run was restarted in
    its own folder with ``hydra.run.dir=...``), else the newest ``last.ckpt`` under ``runs_dir``.
    Lightning's own ``"last"`` would look only in the new, empty run folder and silently start
    from scratch.

    Raises:
        ConfigError: ``"last"`` and no run to resume.
        DataNotFoundError, DataError: a path that is missing, not a checkpoint, or unsafe.
    """
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        here = output_dir / "checkpoints" / "last.ckpt"
        candidates = (
            [here]
            if here.is_file()
            else sorted(runs_dir.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        )
        if not candidates:
            raise ConfigError(
                f"ckpt_path=last: no run with checkpoints/last.ckpt under {runs_dir}, so there is "
                "nothing to resume; leave ckpt_path out to train from scratch"
            )
        path = candidates[-1]
    else:
        path = Path(ckpt_path).expanduser()
    read_checkpoint(path)  # refuses a missing, foreign or booby-trapped file before Lightning
    log.info("Resuming training from %s", path)
    return str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A run killed while writing leaves the previous ``last.ckpt`` whole (a rename within a folder is
    atomic; Lightning's own writer stages in the system's temporary folder, which may be another
    file system, where the final move is a copy).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _result(trainer: pl.Trainer) -> TrainResult:
    checkpoint = trainer.checkpoint_callback
    best_score = best_path = last_path = best_epoch = None
    if isinstance(checkpoint, ModelCheckpoint):
        if checkpoint.best_model_score is not None:
            best_score = float(checkpoint.best_model_score)
        best_path = checkpoint.best_model_path or None
        last_path = checkpoint.last_model_path or None
        if best_path:
            best_epoch = torch.load(best_path, map_location="cpu", weights_only=True, mmap=True)[
                "epoch"
            ]
    if best_score is None and "val/dice" in trainer.callback_metrics:
        best_score = float(trainer.callback_metrics["val/dice"])
    log_dir = next(
        (lg.log_dir for lg in trainer.loggers if type(lg).__name__ == "TensorBoardLogger"), None
    )
    return TrainResult(
        best_score=best_score,
        best_epoch=best_epoch,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        epochs_run=trainer.current_epoch,
        log_dir=str(Path(log_dir)) if log_dir else None,
        global_rank=trainer.global_rank,
    )
