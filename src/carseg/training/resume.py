"""Which checkpoint a training run continues from, checked before Lightning starts.

``ckpt_path=last`` finds the run to continue; a job SLURM requeued continues its own folder's
newest checkpoint; a checkpoint of another network, or one that has no epochs left to train, is
refused, saying what differs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.environments import SLURMEnvironment

from carseg.models.registry import INIT_ONLY
from carseg.training.checkpoint_reader import CheckpointRecord, read_checkpoint
from carseg.utils.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from, and its record."""

    path: str
    record: CheckpointRecord


def requeued() -> bool:
    """Whether SLURM has restarted this job (preempted or timed out, then requeued by Lightning's
    SLURM environment or by submitit): it runs again, in the same run folder."""
    return (
        os.environ.get("SLURM_RESTART_COUNT", "0").isdigit()
        and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    )


def lightning_would_resume(output_dir: Path) -> bool:
    """Whether Lightning would go on from an ``hpc_ckpt_*.ckpt`` of the run folder by itself: it
    does whenever it believes it runs under SLURM (``SLURM_NTASKS``, a job name other than
    ``bash``) and finds one. carseg then resumes from it explicitly, so the file is checked."""
    return SLURMEnvironment.detect() and any(output_dir.glob("hpc_ckpt_*.ckpt"))


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
    model_state: Mapping[str, torch.Tensor] | None = None,
    *,
    max_time: str | None,
    max_steps: int,
) -> ResumePoint | None:
    """The checkpoint to resume from, checked; None to start afresh.

    ``"last"`` means this run folder's ``checkpoints/last.ckpt`` (when the run was restarted in
    its own folder with ``hydra.run.dir=...``), else the newest ``last.ckpt`` under ``runs_dir``.
    Lightning's own ``"last"`` would look only in the new, empty run folder and silently start
    from scratch. A job SLURM requeued resumes from its own folder's newest checkpoint unasked.

    Raises:
        ConfigError: ``"last"`` and no run to resume; a checkpoint of another network, or whose
            weights do not fit ``model_state`` (the model's ``state_dict``); a run that already
            trained ``max_epochs`` epochs or ``max_steps`` steps, or spent the time budget
            ``max_time`` (days:hours:minutes:seconds: a resumed run has what is left of it).
        DataNotFoundError, DataError: a path that is missing, not a checkpoint, or unsafe.
    """
    if (requeued() or lightning_would_resume(output_dir)) and newest_in_run(output_dir):
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
    record = CheckpointRecord.from_checkpoint(raw, path)
    _check_same_net(path, record.model.get("net", {}), model_hparams.get("net", {}))
    if model_state is not None:
        _check_weights(path, raw.get("state_dict"), model_state)
    epochs_done = finished_epochs(raw)
    if max_epochs is not None and max_epochs >= 0 and epochs_done >= max_epochs:
        raise ConfigError(
            f"{path} has already trained {epochs_done} epoch(s), and this run stops at "
            f"trainer.max_epochs={max_epochs}: nothing is left to resume. Raise "
            "trainer.max_epochs to train it further"
        )
    steps = raw.get("global_step")
    if isinstance(steps, int) and 0 <= max_steps <= steps:
        raise ConfigError(
            f"{path} has already trained {steps} step(s), and this run stops at "
            f"trainer.max_steps={max_steps}: nothing is left to resume. Raise "
            "trainer.max_steps to train it further"
        )
    spent = trained_seconds(raw)
    if max_time is not None and spent is not None and spent >= seconds(max_time):
        raise ConfigError(
            f"{path} has already trained for {spent / 60:.1f} minutes, and this run's time budget "
            f"is trainer.max_time={max_time} in all (a resumed run has what is left of it): "
            "nothing is left to resume. Raise trainer.max_time to train it further"
        )
    log.info(
        "Resuming training from %s (%d epoch(s) finished, %s step(s)%s)",
        path,
        epochs_done,
        steps if steps is not None else "?",
        f", {spent / 60:.1f} minutes of training" if spent is not None else "",
    )
    return ResumePoint(str(path), record)


def finished_epochs(raw: Mapping[str, Any]) -> int:
    """How many epochs a checkpoint's run finished. One saved inside an epoch (a stop by
    ``trainer.max_time`` or a signal, a validation every few minutes) has not finished the epoch
    it was saved in; one saved by the validation after an epoch's last batch has."""
    try:
        loop = raw["loops"]["fit_loop"]
        epochs = loop["epoch_progress"]["current"]
        done = int(epochs["processed"])
    except (KeyError, TypeError, ValueError):  # a checkpoint without the loops' state
        return int(raw.get("epoch", -1)) + 1
    batches = loop.get("epoch_loop.batch_progress", {})
    if int(epochs.get("started", done)) > done and batches.get("is_last_batch"):
        done += 1  # saved by the validation after the last batch, before the epoch closed
    return done


def seconds(duration: str) -> int:
    """``"00:00:10:00"`` (days:hours:minutes:seconds, as ``trainer.max_time``) -> 600."""
    days, hours, minutes, secs = (int(part) for part in duration.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def trained_seconds(raw: Mapping[str, Any]) -> float | None:
    """The training time a checkpoint's run had spent (Lightning's ``Timer`` keeps it: what a
    resumed ``trainer.max_time`` counts from), or None where no timer ran."""
    callbacks = raw.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return None
    for key, state in callbacks.items():
        if str(key).startswith("Timer") and isinstance(state, Mapping):
            spent = state.get("time_elapsed", {}).get("train")
            if isinstance(spent, int | float):
                return float(spent)
    return None


def _check_same_net(path: Path, saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    keys = [k for k in {*saved, *wanted} if k not in INIT_ONLY]  # (how it was initialised)
    differ = sorted(k for k in keys if saved.get(k) != wanted.get(k))
    if differ:

        def show(node: Mapping[str, Any]) -> str:
            return " ".join(f"model.net.{k}={node.get(k)}" for k in differ)

        raise ConfigError(
            f"{path} was trained with {show(saved)}, but this run's model has {show(wanted)}: its "
            f"weights do not fit. Resume with the run's model settings (add {show(saved)}, or the "
            "run's model=/experiment= choice)"
        )


def _check_weights(path: Path, saved: Any, wanted: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights that would not load: the first missing, unexpected or misshapen tensor."""
    if not isinstance(saved, Mapping):
        raise DataError(f"{path} holds no weights (no state_dict): not a training checkpoint")
    missing = [k for k in wanted if k not in saved]
    unexpected = [k for k in saved if k not in wanted]
    shapes = [
        k
        for k in wanted
        if k in saved and tuple(getattr(saved[k], "shape", ())) != tuple(wanted[k].shape)
    ]
    if missing or unexpected or shapes:
        first = (
            f"{shapes[0]} is {tuple(saved[shapes[0]].shape)} there, "
            f"{tuple(wanted[shapes[0]].shape)} here"
            if shapes
            else (f"{missing[0]} is missing" if missing else f"{unexpected[0]} is not this model's")
        )
        raise ConfigError(
            f"{path}: its weights do not fit this run's model ({first}; {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} of another shape). Resume with the "
            "run's own model settings, or from one of its checkpoints"
        )
