"""src/sweep_report.py as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from carseg.runs.sweep_report import (
    CSV_FILE,
)
from support.entry import run_script


def _job(sweep: Path, name: str, overrides: list[str], summary: dict | str | None) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if isinstance(summary, dict):
        (job / "summary.json").write_text(json.dumps(summary))
    elif isinstance(summary, str):
        (job / "summary.json").write_text(summary)
    return job


def _summary(dice: float, epoch: int, ckpt: str = "") -> dict:
    return {
        "status": "completed",
        "best_val_dice": dice,
        "best_epoch": epoch,
        "epochs_run": 6,
        "wall_time_s": 61.5,
        "train_images_per_s": 12.25,
        "best_checkpoint": ckpt or f"/runs/{epoch}.ckpt",
        "git_commit": "abc123",
        "git_dirty": False,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A grid sweep over lr and width: two good jobs, one crashed, one with a corrupt summary,
    and job 10 (sorted as a number, after job 2), whose loss diverged after a good epoch 2."""
    sweep = tmp_path / "2026-01-31_12-00-00"
    shared = ["data.size=[32,48]", "trainer.max_epochs=6"]
    _job(
        sweep,
        "0",
        ["model.optimizer.lr=0.0001", "model.net.base_width=8", *shared],
        _summary(0.80, 5),
    )
    _job(
        sweep,
        "1",
        ["model.optimizer.lr=0.0003", "model.net.base_width=8", *shared],
        _summary(0.91, 4),
    )
    _job(sweep, "2", ["model.optimizer.lr=0.0001", "model.net.base_width=16", *shared], None)
    _job(sweep, "3", ["model.optimizer.lr=0.0003", "model.net.base_width=16", *shared], "{not json")
    diverged = {**_summary(0.85, 2), "status": "failed", "error": "TrainingDivergedError: nan"}
    _job(sweep, "10", ["model.optimizer.lr=0.001", "model.net.base_width=16", *shared], diverged)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file, not a job
    return sweep


def test_sweep_report_cli(sweep, tmp_path):
    proc = run_script(tmp_path, "sweep_report", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert "best: job 1, val/dice 0.9100" in proc.stdout and (sweep / CSV_FILE).is_file()
    # no argument: the newest sweep under <CARSEG_ROOT>/outputs/train/multiruns
    multiruns = tmp_path / "outputs" / "train" / "multiruns"
    multiruns.mkdir(parents=True)
    sweep.rename(multiruns / sweep.name)
    proc = run_script(tmp_path, "sweep_report")
    assert proc.returncode == 0 and str(multiruns / sweep.name) in proc.stdout

    proc = run_script(tmp_path, "sweep_report", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "error: Sweep folder not found" in proc.stderr and "Traceback" not in proc.stderr
