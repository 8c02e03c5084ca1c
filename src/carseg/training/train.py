"""Build the Trainer, data and model from a composed config, and train: the library behind train.py.

Everything here takes plain configs and returns plain values, so tests call it without Hydra's
command line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from carseg.models.registry import trusting
from carseg.training.best import BestTracker, best_of
from carseg.training.callbacks.record import CheckpointRecorder
from carseg.training.callbacks.stop import StopCleanly, stop_reason
from carseg.training.callbacks.summary import epochs_run
from carseg.training.checkpoint_io import AtomicCheckpointIO
from carseg.training.resume import resolve_resume
from carseg.training.trainer import build_trainer, resolve_trainer_config
from carseg.utils.checks import check_apart, check_bool, check_int
from carseg.utils.errors import ConfigError, TrainingDivergedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    monitor: str  # the metric that picks the best checkpoint (val/dice)
    best_score: float | None  # its best value, None if never measured
    best_epoch: int | None
    best_step: int | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    epochs_run: float  # passes over the training set (a fraction after a stop inside an epoch)
    stopped_by: str | None  # max_time, max_steps, max_epochs, early_stopping, SIGTERM, SIGINT
    log_dir: str | None  # where the TensorBoard event files are, if a TensorBoard logger ran
    global_rank: int = 0  # this process's rank (DDP); only rank 0 reports


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
    seed = cfg.get("seed")
    if seed is not None:
        pl.seed_everything(
            check_int("seed", seed, 0, hint="or null for a random run"), workers=True
        )
    check_apart(cfg.data.root, "data.root", cfg.paths.output_dir, "hydra.run.dir")
    trainer_cfg = resolve_trainer_config(
        OmegaConf.to_container(cfg.trainer, resolve=True), multirun=multirun
    )
    # _convert_="all": plain lists and dicts, so the saved hyperparameters load with
    # torch.load(weights_only=True).
    datamodule: pl.LightningDataModule = instantiate(cfg.data, _convert_="all")
    model: pl.LightningModule = instantiate(cfg.model, _convert_="all")
    refine = cfg.get("refine")  # the edge option the recipe records for inference
    if isinstance(refine, DictConfig):
        refine = OmegaConf.to_container(refine, resolve=True)
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not loggers:
        dropped = [c for c in callbacks if isinstance(c, LearningRateMonitor)]
        if dropped:
            log.info("No logger configured: the learning-rate monitor is left out")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    resume = resolve_resume(
        resume_from(cfg),
        output_dir=Path(cfg.paths.output_dir),
        runs_dir=Path(cfg.paths.log_dir) / cfg.task_name / "runs",
        model_hparams=model.hparams,
        max_epochs=trainer_cfg.get("max_epochs"),
        max_time=trainer_cfg.get("max_time"),
        max_steps=trainer_cfg.get("max_steps", -1),
        model_state=model.state_dict(),
    )
    if resume is not None and hasattr(datamodule, "expect_split"):
        datamodule.expect_split(resume.record.split)
    tracker = BestTracker(cfg.monitor.metric, cfg.monitor.mode)
    trainer = build_trainer(
        trainer_cfg,
        # every run ends with a validated, saved model, whatever ends it (StopCleanly), and
        # every checkpoint carries what inference needs (CheckpointRecorder)
        callbacks=[*callbacks, tracker, StopCleanly(), CheckpointRecorder(refine)],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    return Run(trainer, model, datamodule, resume.path if resume else None, tracker)


def resume_from(cfg: DictConfig) -> str | None:
    """The checkpoint ``ckpt_path`` and ``resume`` ask to continue from: ``resume=true`` is
    ``ckpt_path=last`` (the newest run's ``last.ckpt``).

    Raises:
        ConfigError: ``resume=true`` with a ``ckpt_path`` other than ``last``.
    """
    ckpt_path = cfg.get("ckpt_path")
    if not check_bool("resume", cfg.get("resume", False)):
        return ckpt_path
    if ckpt_path not in (None, "last"):
        raise ConfigError(
            f"resume=true continues the newest run, and ckpt_path={ckpt_path} names a checkpoint: "
            "give one of them (ckpt_path=<file> alone continues from that file)"
        )
    return "last"


def _targets(model: DictConfig) -> list[str]:
    """The ``_target_`` of each node of the model's config (its net, loss, optimiser, schedule)."""
    nodes = [model.get(k) for k in ("net", "loss", "optimizer", "scheduler")]
    return [str(n["_target_"]) for n in nodes if isinstance(n, DictConfig) and "_target_" in n]


def train(cfg: DictConfig, multirun: bool = False) -> TrainResult:
    """Train the model that ``cfg`` describes (see ``build``) and report its best score.

    The classes the model's own config names (its net, loss, optimiser, schedule) may be built
    during the run, whatever their module (a checkpoint's ``_target_`` is only looked up in
    carseg's registries, ``carseg.models.registry``).
    """
    with trusting(*_targets(cfg.model)):
        run = build(cfg, multirun)
        try:
            run.trainer.fit(model=run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
        except TrainingDivergedError as err:
            last = best_of(run.trainer, run.tracker).last_checkpoint or "none written yet"
            raise TrainingDivergedError(
                f"{err}.\nThe last good checkpoint is kept: {last}"
            ) from None
    return _result(run.trainer, run.tracker)


def _result(trainer: pl.Trainer, tracker: BestTracker) -> TrainResult:
    best = best_of(trainer, tracker)
    log_dir = next(
        (lg.log_dir for lg in trainer.loggers if type(lg).__name__ == "TensorBoardLogger"), None
    )
    return TrainResult(
        monitor=tracker.monitor,
        best_score=best.score,
        best_epoch=best.epoch,
        best_step=best.step,
        best_checkpoint=best.checkpoint,
        last_checkpoint=best.last_checkpoint,
        epochs_run=epochs_run(trainer),
        stopped_by=stop_reason(trainer),
        log_dir=str(Path(log_dir)) if log_dir else None,
        global_rank=trainer.global_rank,
    )
