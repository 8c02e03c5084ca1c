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

from carseg.training.checkpoint_reader import CheckpointRecord, read_checkpoint
from carseg.utils.errors import ConfigError

log = logging.getLogger(__name__)

# A net's arguments that only say how it is first initialised: a resume may give other values.
INIT_ONLY = ("encoder_weights", "pretrained")


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
) -> ResumePoint | None:
    """The checkpoint to resume from, checked; None to start afresh.

    ``"last"`` means this run folder's ``checkpoints/last.ckpt`` (when the run was restarted in
    its own folder with ``hydra.run.dir=...``), else the newest ``last.ckpt`` under ``runs_dir``.
    Lightning's own ``"last"`` would look only in the new, empty run folder and silently start
    from scratch. A job SLURM requeued resumes from its own folder's newest checkpoint unasked.

    Raises:
        ConfigError: ``"last"`` and no run to resume; a checkpoint of another network; a run
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
    record = CheckpointRecord.from_checkpoint(raw, path)
    _check_same_net(path, record.model.get("net", {}), model_hparams.get("net", {}))
    epochs_done = finished_epochs(raw)
    if max_epochs is not None and max_epochs >= 0 and epochs_done >= max_epochs:
        raise ConfigError(
            f"{path} has already trained {epochs_done} epoch(s), and this run stops at "
            f"trainer.max_epochs={max_epochs}: nothing is left to resume. Raise "
            "trainer.max_epochs to train it further"
        )
    log.info("Resuming training from %s (epoch %d done)", path, epochs_done)
    return ResumePoint(str(path), record)


def finished_epochs(raw: Mapping[str, Any]) -> int:
    """How many epochs a checkpoint's run finished: a checkpoint saved inside an epoch (the one
    Lightning's SLURM environment saves when signalled, or a ``max_time`` stop) has not finished
    the epoch it was saved in."""
    try:
        return int(raw["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):  # a checkpoint without the loops' state
        return int(raw.get("epoch", -1)) + 1


def _check_same_net(path: Path, saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    keys = [k for k in {*saved, *wanted} if k not in INIT_ONLY]
    differ = sorted(k for k in keys if saved.get(k) != wanted.get(k))
    if differ:

        def show(node: Mapping[str, Any]) -> str:
            return " ".join(f"model.net.{k}={node.get(k)}" for k in differ)

        raise ConfigError(
            f"{path} was trained with {show(saved)}, but this run's model has {show(wanted)}: its "
            f"weights do not fit. Resume with the run's model settings (add {show(saved)}, or the "
            "run's model=/experiment= choice)"
        )
