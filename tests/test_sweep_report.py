"""carseg.runs.sweep_report: the jobs of a multirun folder ranked, as text, CSV and PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from carseg.runs.sweep_report import (
    CSV_FILE,
    PLOT_FILE,
    SweepNotFoundError,
    collect_jobs,
    latest_sweep,
    parse_overrides,
    report,
    short_value,
)


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


def test_report_ranks_jobs_best_first_and_lists_failed_jobs_last(sweep):
    result = report(sweep)
    assert [j.name for j in result.jobs] == ["1", "10", "0", "2", "3"]
    assert result.best.name == "1" and result.best.best_val_dice == 0.91
    assert result.varying == ["model.optimizer.lr", "model.net.base_width"]
    assert result.shared == {"data.size": "[32,48]", "trainer.max_epochs": "6"}
    assert result.jobs[3].status == "no result (no summary.json)"
    assert result.jobs[4].status.startswith("no result (unreadable summary.json")

    lines = result.text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    rows = [line.split() for line in lines[header + 2 : header + 7]]
    # rank, job, lr, width, dice, epoch, epochs, time, img/s
    assert [r[:5] for r in rows[:3]] == [
        ["1", "1", "0.0003", "8", "0.9100"],
        ["2", "10", "0.001", "16", "0.8500"],
        ["3", "0", "0.0001", "8", "0.8000"],
    ]
    assert rows[0][5:] == ["4", "6", "61.5", "12.2"]
    assert rows[1][5] == "(failed)"  # ranked by the best it reached, marked as failed
    assert rows[3][:4] == ["-", "2", "0.0001", "16"] and "no result" in " ".join(rows[3])
    assert "job 10: failed: TrainingDivergedError: nan" in result.text
    assert "job 2: no result (no summary.json)" in result.text
    assert "shared overrides: data.size=[32,48] trainer.max_epochs=6" in result.text
    assert "best: job 1, val/dice 0.9100 (epoch 4)" in result.text
    assert "/runs/4.ckpt" in result.text


def test_report_writes_a_csv_with_every_job_and_override(sweep):
    result = report(sweep)
    assert result.csv_path == sweep / CSV_FILE
    with result.csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["1", "10", "0", "2", "3"]
    assert rows[0]["rank"] == "1" and float(rows[0]["best_val_dice"]) == 0.91
    assert rows[0]["model.optimizer.lr"] == "0.0003" and rows[0]["trainer.max_epochs"] == "6"
    assert rows[0]["best_checkpoint"] == "/runs/4.ckpt" and rows[0]["git_commit"] == "abc123"
    assert rows[3]["rank"] == "" and rows[3]["best_val_dice"] == ""
    assert rows[3]["status"].startswith("no result")


def test_report_plot_has_a_bar_per_job_best_highlighted(sweep):
    result = report(sweep)
    assert result.plot_path == sweep / PLOT_FILE
    with Image.open(result.plot_path) as image:
        assert image.format == "PNG" and image.width >= 800
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert (44, 160, 44) in colours  # matplotlib's tab:green: the best job's bar and point
    assert (31, 119, 180) in colours  # tab:blue: the others


def test_report_without_writing_leaves_the_folder_alone(sweep):
    before = sorted(p.name for p in sweep.iterdir())
    result = report(sweep, write=False)
    assert result.csv_path is None and sorted(p.name for p in sweep.iterdir()) == before


def test_jobs_without_overrides_file_are_still_listed(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text(json.dumps(_summary(0.5, 1)))
    (job,) = collect_jobs(tmp_path)
    assert job.overrides == {} and job.best_val_dice == 0.5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "Sweep folder not found"),
        (lambda p: p, "No job folders"),
        (lambda p: (p / ".hydra").mkdir() or p, "is a single run, not a sweep"),
    ],
)
def test_bad_sweep_folders_say_what_was_expected(tmp_path, make, message):
    folder = make(tmp_path)
    with pytest.raises(SweepNotFoundError, match=message) as err:
        report(folder)
    assert "<sweep>/<job number>/.hydra/overrides.yaml" in str(err.value)


def test_latest_sweep_picks_the_newest_by_name(tmp_path):
    for name in ("2026-01-01_10-00-00", "2026-02-01_09-00-00", "2026-01-15_23-59-59"):
        (tmp_path / name).mkdir()
    assert latest_sweep(tmp_path).name == "2026-02-01_09-00-00"
    with pytest.raises(SweepNotFoundError, match="No sweep in"):
        latest_sweep(tmp_path / "nothing")


def test_parse_overrides_and_short_values():
    assert parse_overrides(["model.optimizer.lr=1e-4", "data.size=[32,48]", "+x=a=b", "~key"]) == {
        "model.optimizer.lr": "1e-4",
        "data.size": "[32,48]",
        "+x": "a=b",
        "~key": "",
    }
    assert short_value("0.0003574712922600243") == "3.575e-04"
    assert short_value("1.4453378978124864") == "1.445"
    assert short_value("16") == "16" and short_value("unet_small") == "unet_small"


@pytest.mark.parametrize("content", ["just a string", "42", "{model.lr: 1}", "[[1, 2]]", "null"])
def test_an_overrides_file_that_is_not_a_list_is_read_as_none(tmp_path, content):
    sweep = tmp_path / "sweep"
    job = _job(sweep, "0", [], _summary(0.8, 2))
    (job / ".hydra" / "overrides.yaml").write_text(content + "\n")
    result = report(sweep, write=False)
    assert result.jobs[0].best_val_dice == 0.8
    assert all(isinstance(v, str) for v in result.jobs[0].overrides.values())


def test_a_read_only_sweep_folder_is_named_and_another_can_be_given(sweep, tmp_path):
    from carseg.utils.errors import CarsegError
    from support.files import read_only

    with read_only(sweep), pytest.raises(CarsegError, match="Cannot write the report into .*--out"):
        report(sweep)
    with read_only(sweep):
        result = report(sweep, out_dir=tmp_path / "elsewhere")
    assert result.csv_path == tmp_path / "elsewhere" / "sweep_report.csv"
    assert not (sweep / "sweep_report.csv").exists()


def test_a_sweep_over_folds_names_its_fold_checkpoints(tmp_path):
    sweep = tmp_path / "folds"
    for fold in (2, 0, 1):
        _job(sweep, str(fold), [f"data.fold={fold}", "data.folds=3"],
             _summary(0.9, 3, ckpt=f"/runs/fold{fold}.ckpt"))  # fmt: skip
    text = report(sweep, write=False).text
    assert "fold checkpoints (3 folds" in text
    assert "ckpt_path=[/runs/fold0.ckpt,/runs/fold1.ckpt,/runs/fold2.ckpt]" in text


def test_a_sweep_over_folds_and_another_option_takes_each_folds_best_job(tmp_path):
    """folds x lr, scores 0.9/0.1 (fold 0) and 0.8/0.2 (fold 1): the jobs of 0.9 and 0.8."""
    sweep = tmp_path / "folds_lr"
    jobs = [(0, "1e-3", 0.9), (0, "1e-4", 0.1), (1, "1e-3", 0.8), (1, "1e-4", 0.2)]
    for number, (fold, lr, dice) in enumerate(jobs):
        _job(sweep, str(number), [f"data.fold={fold}", "data.folds=2", f"model.optimizer.lr={lr}"],
             _summary(dice, 3, ckpt=f"/runs/job{number}.ckpt"))  # fmt: skip
    text = report(sweep, write=False).text
    assert "ckpt_path=[/runs/job0.ckpt,/runs/job2.ckpt]" in text
