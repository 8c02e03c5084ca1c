"""Sweeps past one process: hydra/launcher=local runs the jobs of a sweep as processes side by side,
each whole on its own; a job that raises or dies is recorded and the others go on. And a job that
SLURM requeues resumes from its last.ckpt."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from carseg.runs.sweep_report import report
from support.entry import REPO, TINY_TRAIN, run_entry, run_script

pytestmark = pytest.mark.slow

# the tests' helpers (a callback that kills its job) are importable in the job processes too
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
LOCAL = ["hydra/launcher=local", "hydra.launcher.max_parallel=2", *TINY_TRAIN]


def _sweep(root: Path) -> Path:
    (sweep,) = (root / "outputs" / "train" / "multiruns").iterdir()
    return sweep


def _summaries(sweep: Path) -> list[dict]:
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((job / "summary.json").read_text()) for job in jobs]


def _ran_side_by_side(summaries: list[dict]) -> bool:
    """Distinct processes whose fits overlapped in time."""
    start = [datetime.fromisoformat(s["started"]) for s in summaries]
    end = [datetime.fromisoformat(s["finished"]) for s in summaries]
    pids = {s["pid"] for s in summaries}
    return len(pids) == len(summaries) and os.getpid() not in pids and max(start) < min(end)


def test_a_grid_runs_its_jobs_as_processes_at_the_same_time(tmp_path):
    proc = run_script(
        tmp_path,
        "train",
        "-m",
        *LOCAL,
        "trainer.max_epochs=6",
        "model.optimizer.lr=1e-3,3e-3",
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = _sweep(tmp_path)
    summaries = _summaries(sweep)
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert _ran_side_by_side(summaries), summaries
    for job in ("0", "1"):  # each job whole: its checkpoints and TensorBoard events
        assert list((sweep / job / "checkpoints").glob("epoch_*.ckpt"))
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents*"))
    ranked = report(sweep, write=False)  # the report ranks a launcher's sweep as a basic one's
    assert {j.name for j in ranked.jobs} == {"0", "1"} and ranked.varying == ["model.optimizer.lr"]
    assert ranked.jobs[0].best_val_dice >= ranked.jobs[1].best_val_dice


def test_an_optuna_search_asks_n_jobs_trials_at_a_time(tmp_path):
    proc = run_script(
        tmp_path,
        "train",
        "-m",
        "hparams_search=optuna",
        *LOCAL,
        "trainer.max_epochs=4",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = _sweep(tmp_path)
    summaries = _summaries(sweep)
    assert _ran_side_by_side(summaries), summaries
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(s["best_val_dice"] for s in summaries))
    assert report(sweep, write=False).best.best_val_dice == pytest.approx(best["best_value"])


def test_a_job_that_raises_or_dies_is_recorded_and_the_other_goes_on(tmp_path):
    proc = run_script(
        tmp_path,
        "train",
        "-m",
        *LOCAL,
        "hydra.launcher.max_parallel=3",
        "trainer.max_epochs=3",
        "+callbacks.killer._target_=support.lightning.kill_at_epoch",
        "+callbacks.killer.epoch=1,99",
        "data.batch_size=4,0",
        env=ENV,
    )
    assert "Traceback" not in proc.stderr.split("Error executing job")[0]
    sweep = _sweep(tmp_path)
    jobs = {j.overrides["+callbacks.killer.epoch"] + "/" + j.overrides["data.batch_size"]: j
            for j in report(sweep, write=False).jobs}  # fmt: skip
    assert jobs["99/4"].status == "completed" and jobs["99/4"].best_val_dice is not None
    assert jobs["1/4"].status == "killed"  # its summary said running; its process is gone
    for bad in ("1/0", "99/0"):
        assert jobs[bad].status == "failed" and "data.batch_size" in jobs[bad].get("error")
    assert proc.returncode != 0  # and the sweep says it had failures


def test_a_requeued_slurm_job_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "outputs" / "train" / "runs" / "slurm-1234"
    first = run_entry(
        tmp_path, "train", *TINY_TRAIN, "trainer.max_epochs=1", f"hydra.run.dir={run}"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    one_epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    # SLURM preempted it and requeued the same job: the same command, the same folder
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = run_entry(
        tmp_path, "train", *TINY_TRAIN, "trainer.max_epochs=3", f"hydra.run.dir={run}"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "SLURM requeued this job" in again.stdout + again.stderr
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * one_epoch  # 2 more epochs, not 3
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    refused = run_entry(tmp_path, "train", *TINY_TRAIN, f"hydra.run.dir={run}")
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
