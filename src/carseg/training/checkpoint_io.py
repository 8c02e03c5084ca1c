"""Checkpoints: how they are written, read, checked, and which one a resumed run continues.

- Written atomically (``AtomicCheckpointIO``, Lightning's checkpoint writer): a kill while writing
  keeps the previous file whole; a full disk is named as such.
- Read safely (``read_checkpoint``): ``torch.load(weights_only=True)``, so a file carrying pickled
  code is refused without being run.
- Loaded for inference (``load_model``): the model rebuilt from its own hyperparameters, with the
  training size, threshold and split by car it recorded (``ModelInfo``).
- Chosen for a resume (``resolve_resume``): ``last`` finds the run, and a checkpoint that does not
  fit this run's model, or that has no epochs left to train, is refused before Lightning starts.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from carseg.utils.atomic import atomic_file
from carseg.utils.errors import CarsegError, ConfigError, DataError, DataNotFoundError, first_line
from carseg.data.split import SplitRecord

log = logging.getLogger(__name__)

# The model's hyperparameters that shape its weights: a checkpoint only loads into the same.
WEIGHT_KEYS = ("in_channels", "base_width", "depth", "bilinear", "batch_norm")
DATAMODULE_KEY = "CarvanaDataModule"  # where Lightning stores the data module's state_dict()


class DiskFullError(CarsegError, OSError):
    """A checkpoint could not be written: no space left on the device."""


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's content, loaded with ``weights_only=True`` (tensors and plain values only).

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: not a PyTorch checkpoint, or one carrying pickled objects (refused unread).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"Checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise DataError(
            f"{path} was refused: it holds Python objects other than tensors and plain values, "
            "and unpickling them could run code. carseg's checkpoints never do; load only "
            "checkpoints you trust."
        ) from None
    except Exception as err:  # not a zip, truncated, another format ...
        raise DataError(f"{path} is not a PyTorch checkpoint ({first_line(err)})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a training checkpoint (it holds a {type(raw).__name__})")
    return raw


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch a checkpoint file was saved at."""
    return int(read_checkpoint(path)["epoch"])


@dataclass(frozen=True)
class ModelInfo:
    """What inference needs to know of a trained model, read from its checkpoint."""

    size: tuple[int, int] | None  # (height, width) it was trained at; None if not recorded
    threshold: float
    hparams: dict
    split: SplitRecord | None  # its split by car; None for checkpoints older than the record


def load_model(path: str | Path, device: str = "cpu"):
    """The trained ``SegmentationModule`` in eval mode on ``device``, and its ``ModelInfo``.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: the file is not a carseg checkpoint, or does not fit this version's model.
    """
    from carseg.training.segmentation_module import SegmentationModule

    path = Path(path).expanduser()
    raw = read_checkpoint(path)
    if "state_dict" not in raw or "hyper_parameters" not in raw:
        raise DataError(
            f"{path} is not a carseg training checkpoint (no state_dict/hyper_parameters)"
        )
    try:
        model = SegmentationModule(**raw["hyper_parameters"])
        model.load_state_dict(raw["state_dict"])
    except (TypeError, RuntimeError, CarsegError) as err:
        raise DataError(
            f"{path} does not fit this version's SegmentationModule (another model config?): "
            f"{first_line(err)}"
        ) from None
    model.eval().place_on(device)
    size = raw.get("datamodule_hyper_parameters", {}).get("size")
    record = raw.get(DATAMODULE_KEY, {}).get("split")
    return model, ModelInfo(
        size=(int(size[0]), int(size[1])) if size else None,
        threshold=float(model.hparams.threshold),
        hparams=dict(model.hparams),
        split=SplitRecord.from_dict(record) if record else None,
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A run killed while writing leaves the previous ``last.ckpt`` whole (a rename within a folder is
    atomic; Lightning's own writer stages in the system's temporary folder, which may be another
    file system, where the final move is a copy). A full disk stops the run with a message that
    says so, where torch would report a failed "file write" of an inner record.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        try:
            with atomic_file(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:
            if _disk_full(err, path):
                free = shutil.disk_usage(path.parent).free / 2**20
                raise DiskFullError(
                    f"No space left on the device while writing {path} ({free:.0f} MiB free). "
                    "The previous checkpoint is kept. Free some space, or send runs elsewhere "
                    "with paths.log_dir=<folder on another disk>"
                ) from None
            raise


def _disk_full(err: BaseException, path: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch's zip writer reports ENOSPC as "PytorchStreamWriter failed writing file ..."
    if isinstance(err, RuntimeError) and "write" in str(err):
        try:
            return shutil.disk_usage(path.parent).free < 16 * 2**20
        except OSError:
            return False
    return False


def requeued() -> bool:
    """Whether SLURM has restarted this job (preempted or timed out, then requeued by Lightning's
    SLURM environment or by submitit): it runs again, in the same run folder."""
    return (
        os.environ.get("SLURM_RESTART_COUNT", "0").isdigit()
        and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    )


def newest_in_run(output_dir: Path) -> Path | None:
    """The newest checkpoint a run folder holds to go on from: ``checkpoints/last.ckpt``, or the
    ``hpc_ckpt_*.ckpt`` Lightning's SLURM environment saves when it is told to stop."""
    found = [output_dir / "checkpoints" / "last.ckpt", *output_dir.glob("hpc_ckpt_*.ckpt")]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_resume(
    ckpt_path: str | None,
    output_dir: Path,
    runs_dir: Path,
    model_hparams: Mapping[str, Any],
    max_epochs: int | None,
) -> str | None:
    """The checkpoint to resume from, checked; None to start afresh.

    ``"last"`` means this run folder's ``checkpoints/last.ckpt`` (when the run was restarted in
    its own folder with ``hydra.run.dir=...``), else the newest ``last.ckpt`` under ``runs_dir``.
    Lightning's own ``"last"`` would look only in the new, empty run folder and silently start
    from scratch. A job SLURM requeued resumes from its own folder's newest checkpoint unasked.

    Raises:
        ConfigError: ``"last"`` and no run to resume; a checkpoint of another model shape; a run
            that already trained ``max_epochs`` epochs.
        DataNotFoundError, DataError: a path that is missing, not a checkpoint, or unsafe.
    """
    if requeued() and newest_in_run(output_dir) is not None:
        # whatever the command says to start from: the job's own progress is newer
        ckpt_path = str(newest_in_run(output_dir))
        log.info("SLURM requeued this job: it goes on from %s", ckpt_path)
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
    raw = read_checkpoint(path)  # refuses a missing, foreign or booby-trapped file
    _check_same_model(path, raw.get("hyper_parameters", {}), model_hparams)
    epochs_done = finished_epochs(raw)
    if max_epochs is not None and max_epochs >= 0 and epochs_done >= max_epochs:
        raise ConfigError(
            f"{path} has already trained {epochs_done} epoch(s), and this run stops at "
            f"trainer.max_epochs={max_epochs}: nothing is left to resume. Raise "
            "trainer.max_epochs to train it further"
        )
    log.info("Resuming training from %s (epoch %d done)", path, epochs_done)
    return str(path)


def finished_epochs(raw: Mapping[str, Any]) -> int:
    """How many epochs a checkpoint's run finished: a checkpoint saved inside an epoch (the one
    Lightning's SLURM environment saves when signalled, or a ``max_time`` stop) has not finished
    the epoch it was saved in."""
    try:
        return int(raw["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):  # a checkpoint without the loops' state
        return int(raw.get("epoch", -1)) + 1


def _check_same_model(path: Path, saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    differ = [k for k in WEIGHT_KEYS if k in saved and saved[k] != wanted.get(k)]
    if differ:
        theirs = " ".join(f"model.{k}={saved[k]}" for k in differ)
        ours = " ".join(f"model.{k}={wanted.get(k)}" for k in differ)
        raise ConfigError(
            f"{path} was trained with {theirs}, but this run's model has {ours}: its weights do "
            f"not fit. Resume with the run's model settings (add {theirs}, or the run's "
            "model=/experiment= choice)"
        )
