"""The Lightning Trainer from a ``trainer`` config group, for training and the predict loop alike.

``resolve_trainer_config`` translates Lightning 1's ``gpus`` key and checks that the devices asked
for exist; ``build_trainer`` makes the Trainer, turning Lightning's refusal of a value into a
message naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from carseg.utils.checks import require_gpus
from carseg.utils.errors import ConfigError, first_line
from carseg.utils.processes import cpu_has_native_bf16, started_by_launcher


def _whole(minimum: int, none: bool = True):
    def check(value: Any) -> bool:
        return (none and value is None) or (
            isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        )

    return check, f"an integer >= {minimum}" + (" or null" if none else "")


def _share_or_count(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return value is None
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, float) and 0.0 <= value <= 1.0


_DURATION = re.compile(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}")
_FLAG = (lambda v: isinstance(v, bool), "true or false")
# The Trainer's keys Lightning would take as they are and only trip over later (an
# AssertionError after the sanity check): checked here, each with what it must be.
TRAINER_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_epochs": _whole(-1),
    "min_epochs": _whole(0),
    "max_steps": _whole(-1, none=False),
    "min_steps": _whole(0),
    "max_time": (
        lambda v: v is None or (isinstance(v, str) and bool(_DURATION.fullmatch(v))),
        "days:hours:minutes:seconds, e.g. 00:00:10:00, or null",
    ),
    "check_val_every_n_epoch": _whole(1),
    "val_check_interval": (
        lambda v: (
            _whole(1)[0](v)
            or (isinstance(v, float) and 0.0 < v <= 1.0)
            or (isinstance(v, str) and bool(_DURATION.fullmatch(v)))
        ),
        "a share of an epoch in (0, 1], a number of batches, a time (days:hours:minutes:seconds, "
        "e.g. 00:00:02:00), or null",
    ),
    "log_every_n_steps": _whole(1),
    "num_sanity_val_steps": _whole(-1),
    "accumulate_grad_batches": _whole(1, none=False),
    "num_nodes": _whole(1, none=False),
    "gradient_clip_val": (
        lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0),
        "a number >= 0 or null",
    ),
    "limit_train_batches": (_share_or_count, "a share in [0, 1] or a number of batches"),
    "limit_val_batches": (_share_or_count, "a share in [0, 1] or a number of batches"),
    "overfit_batches": (_share_or_count, "a share in [0, 1] or a number of batches"),
    "fast_dev_run": (
        lambda v: isinstance(v, bool) or (isinstance(v, int) and v >= 0),
        "true, false or a number of batches",
    ),
    "benchmark": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "deterministic": (lambda v: v in (None, True, False, "warn"), "true, false, warn or null"),
    "sync_batchnorm": _FLAG,
    "enable_progress_bar": _FLAG,
    "enable_checkpointing": _FLAG,
    "enable_model_summary": _FLAG,
}


def check_trainer_values(cfg: Mapping[str, Any]) -> None:
    """Refuse a ``trainer.*`` value of the wrong kind (``trainer.max_epochs=abc``) before
    Lightning starts.

    Raises:
        ConfigError: the key, what it must be, and what it got.
    """
    for key, (valid, what) in TRAINER_VALUES.items():
        if key in cfg and not valid(cfg[key]):
            raise ConfigError(f"trainer.{key} must be {what}, got {cfg[key]!r}")
    least, most = cfg.get("min_epochs"), cfg.get("max_epochs")
    if least is not None and most is not None and 0 <= most < least:
        raise ConfigError(
            f"trainer.min_epochs={least} is more than trainer.max_epochs={most}: lower "
            "min_epochs or raise max_epochs"
        )
    if cfg.get("max_time") is not None:
        for key in ("min_epochs", "min_steps"):
            if cfg.get(key):
                raise ConfigError(
                    f"trainer.{key}={cfg[key]} would keep training past the time budget "
                    f"trainer.max_time={cfg['max_time']}: set trainer.{key}=null with a budget"
                )


def resolve_trainer_config(trainer: Mapping[str, Any], multirun: bool = False) -> dict[str, Any]:
    """Translate the Lightning 1 ``gpus`` key and check that the devices asked for exist.

    ``gpus=N`` (N >= 1) means ``accelerator="gpu", devices=N``; ``gpus=0`` means the CPU;
    a list ``[0, 2]`` picks those GPUs. Lightning 2 removed the key; users still type it.

    Raises:
        ConfigError: GPUs asked for that this machine does not have, a malformed ``gpus``, or a
            DDP strategy inside a Hydra multirun (the second process would re-run the sweep).
    """
    cfg = dict(trainer)
    check_trainer_values(cfg)
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

    if cfg.get("precision") == "auto":
        cfg["precision"] = auto_precision(accelerator)
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


def auto_precision(accelerator: str) -> str:
    """``trainer.precision=auto``: 16-bit mixed precision on a GPU, bf16 mixed precision on a CPU
    that computes in bf16 natively (AMX, AVX-512 BF16), full precision on any other CPU (where
    bf16 is emulated: many times slower)."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


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
