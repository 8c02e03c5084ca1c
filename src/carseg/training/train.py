"""Build the Trainer, data and model from a composed config, and train: the library behind train.py.

Everything here takes plain configs and returns plain values, so tests call it without Hydra's
command line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from carseg.training.best import BestTracker, best_of
from carseg.training.checkpoint_io import AtomicCheckpointIO, resolve_resume
from carseg.utils.checks import require_gpus
from carseg.utils.errors import ConfigError, TrainingDivergedError, first_line
from carseg.utils.processes import started_by_launcher

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
    relaunches = strategy.startswith("ddp") and not strategy.startswith("ddp_spawn")
    # (a job whose processes the launcher started, one per device, relaunches nothing: SLURM)
    if multirun and relaunches and not started_by_launcher():
        raise ConfigError(
            f"trainer.strategy={strategy} re-launches this script, which in a Hydra multirun (-m) "
            "re-runs the whole sweep in every process. Use trainer.strategy=ddp_spawn in sweeps, "
            "or run the DDP job on its own without -m."
        )
    return cfg


def _check_gpus(devices: Any) -> None:
    if isinstance(devices, list | tuple):
        wanted = len(devices)
    elif devices in ("auto", -1, "-1", None):
        wanted = 1
    else:
        wanted = int(devices)
    require_gpus(
        wanted, "trainer.gpus / trainer.accelerator=gpu", "trainer=cpu (or trainer.gpus=0)"
    )


def build_trainer(trainer_cfg: Mapping[str, Any], **objects: Any) -> pl.Trainer:
    """The Trainer of ``trainer_cfg`` (from ``resolve_trainer_config``) with ``objects``
    (callbacks, loggers, plugins) passed along.

    Raises:
        ConfigError: Lightning refused one of the ``trainer.*`` values.
    """
    try:
        return instantiate(trainer_cfg, **objects, _convert_="all")
    except InstantiationException as err:
        raise ConfigError(f"trainer: {first_line(err.__cause__ or err)}") from None


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (None entries skipped)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


@dataclass
class Run:
    """Everything a training run is made of, built from its config (``build``)."""

    trainer: pl.Trainer
    model: pl.LightningModule
    datamodule: pl.LightningDataModule
    ckpt_path: str | None  # the checkpoint resumed from, or None
    tracker: BestTracker


def build(cfg: DictConfig, multirun: bool = False) -> Run:
    """The Trainer, model and data module that ``cfg`` (the composed ``conf/train.yaml``)
    describes, checked, with the checkpoint to resume from; nothing is trained or read yet.

    Args:
        cfg: keys ``model``, ``data``, ``trainer``, ``callbacks``, ``logger``, ``seed``,
            ``ckpt_path`` (a checkpoint to resume from, or None), ``paths``.
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
    ckpt_path = resolve_resume(
        cfg.get("ckpt_path"),
        output_dir=Path(cfg.paths.output_dir),
        runs_dir=Path(cfg.paths.log_dir) / cfg.task_name / "runs",
        model_hparams=model.hparams,
        max_epochs=trainer_cfg.get("max_epochs"),
    )
    tracker = BestTracker("val/dice", "max")
    trainer = build_trainer(
        trainer_cfg,
        callbacks=[*callbacks, tracker],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    return Run(trainer, model, datamodule, ckpt_path, tracker)


def train(cfg: DictConfig, multirun: bool = False) -> TrainResult:
    """Train the model that ``cfg`` describes (see ``build``) and report its best score."""
    run = build(cfg, multirun)
    try:
        run.trainer.fit(model=run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
    except TrainingDivergedError as err:
        last = best_of(run.trainer, run.tracker).last_checkpoint or "none written yet"
        raise TrainingDivergedError(f"{err}.\nThe last good checkpoint is kept: {last}") from None
    return _result(run.trainer, run.tracker)


def _result(trainer: pl.Trainer, tracker: BestTracker) -> TrainResult:
    best = best_of(trainer, tracker)
    log_dir = next(
        (lg.log_dir for lg in trainer.loggers if type(lg).__name__ == "TensorBoardLogger"), None
    )
    return TrainResult(
        best_score=best.score,
        best_epoch=best.epoch,
        best_checkpoint=best.checkpoint,
        last_checkpoint=best.last_checkpoint,
        epochs_run=trainer.current_epoch,
        log_dir=str(Path(log_dir)) if log_dir else None,
        global_rank=trainer.global_rank,
    )
