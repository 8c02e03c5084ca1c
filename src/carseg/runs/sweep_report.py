"""Rank the jobs of a Hydra multirun (a grid or an Optuna sweep) by their best val/dice.

A multirun writes one folder per job::

    <sweep>/<job number>/.hydra/overrides.yaml   what the sweeper set for that job
    <sweep>/<job number>/summary.json            carseg.training.callbacks.RunSummary, at fit end
    <sweep>/optimization_results.yaml            Optuna's best parameters (Optuna sweeps only)

``report`` reads them all, and writes ``sweep_report.csv`` and ``sweep_report.png`` into the sweep
folder. A job without a readable ``summary.json`` (it crashed, or is still running) is listed with
"no result", after the others.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from carseg.utils.atomic import atomic_file
from carseg.utils.errors import CarsegError

SUMMARY_FILE = "summary.json"
CSV_FILE = "sweep_report.csv"
PLOT_FILE = "sweep_report.png"
NO_RESULT = "no result"
SWEEP_LAYOUT = (
    "Expected a multirun folder as `python src/train.py -m ...` writes it:\n"
    "    <sweep>/<job number>/.hydra/overrides.yaml\n"
    "    <sweep>/<job number>/summary.json\n"
    "e.g. outputs/train/multiruns/2026-01-31_12-00-00"
)


class SweepNotFoundError(CarsegError, FileNotFoundError):
    """A sweep folder that does not exist or holds no job folders."""


@dataclass(frozen=True)
class Job:
    """One job of a sweep: what it was given and what it reached."""

    name: str  # the job's folder name: its number in the sweep
    path: Path
    overrides: dict[str, str]  # key -> value, as the sweeper typed them
    summary: dict[str, Any] | None = None  # summary.json, None when missing or unreadable
    problem: str | None = None  # why there is no summary

    @property
    def best_val_dice(self) -> float | None:
        value = (self.summary or {}).get("best_val_dice")
        if value is None or not isinstance(value, int | float) or math.isnan(value):
            return None
        return float(value)

    @property
    def status(self) -> str:
        """``completed``, ``failed``, ``interrupted``, ``running``, or ``killed``: a job whose
        summary says running but whose process is gone from this host (SIGKILL, out of memory)."""
        if self.summary is None:
            return self.problem or NO_RESULT
        status = str(self.summary.get("status", "unknown"))
        if status == "running" and self.summary.get("host") == socket.gethostname():
            pid = self.summary.get("pid")
            if isinstance(pid, int) and not _alive(pid):
                return "killed"
        return status

    def get(self, key: str) -> Any:
        return (self.summary or {}).get(key)


@dataclass
class SweepReport:
    """The ranked jobs and the files written."""

    sweep_dir: Path
    jobs: list[Job]  # best first; jobs without a result last
    varying: list[str]  # override keys whose value differs between jobs
    shared: dict[str, str]  # override keys every job has with the same value
    optuna: dict[str, Any] | None = None  # optimization_results.yaml, if there
    csv_path: Path | None = None
    plot_path: Path | None = None
    text: str = field(default="", repr=False)

    @property
    def best(self) -> Job | None:
        return self.jobs[0] if self.jobs and self.jobs[0].best_val_dice is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``["model.lr=0.001", "trainer=cpu"]`` -> ``{"model.lr": "0.001", "trainer": "cpu"}``."""
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        out[key] = value if sep else ""
    return out


def _job_sort_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def read_job(path: Path) -> Job:
    """The job in folder ``path``; a missing or broken file becomes ``problem``, not an error."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides: dict[str, str] = {}
    if overrides_file.is_file():
        try:
            content = yaml.safe_load(overrides_file.read_text()) or []
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            content = []
        # Hydra writes a list of "key=value" strings; anything else is not read as overrides
        if isinstance(content, list):
            overrides = parse_overrides([str(line) for line in content if line is not None])
    summary_file = path / SUMMARY_FILE
    if not summary_file.is_file():
        return Job(path.name, path, overrides, None, f"{NO_RESULT} (no {SUMMARY_FILE})")
    try:
        summary = json.loads(summary_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        return Job(
            path.name, path, overrides, None, f"{NO_RESULT} (unreadable {SUMMARY_FILE}: {err})"
        )
    if not isinstance(summary, dict):
        return Job(
            path.name, path, overrides, None, f"{NO_RESULT} ({SUMMARY_FILE} is not a mapping)"
        )
    return Job(path.name, path, overrides, summary)


def collect_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job folder of a multirun folder, in job order.

    Raises:
        SweepNotFoundError: the folder does not exist, is a single run, or holds no job folders.
    """
    sweep = Path(sweep_dir).expanduser()
    if sweep.exists() and not sweep.is_dir():
        raise SweepNotFoundError(f"{sweep} is a file, not a sweep folder\n{SWEEP_LAYOUT}")
    if not sweep.is_dir():
        raise SweepNotFoundError(f"Sweep folder not found: {sweep}\n{SWEEP_LAYOUT}")
    if (sweep / ".hydra").is_dir() and not any(
        (p / ".hydra").is_dir() for p in sweep.iterdir() if p.is_dir()
    ):
        raise SweepNotFoundError(
            f"{sweep} is a single run, not a sweep: its results are in {sweep / SUMMARY_FILE}\n"
            f"{SWEEP_LAYOUT}"
        )
    folders = [
        p for p in sweep.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or p.name.isdigit())
    ]
    if not folders:
        raise SweepNotFoundError(f"No job folders in {sweep}\n{SWEEP_LAYOUT}")
    return [read_job(p) for p in sorted(folders, key=_job_sort_key)]


def rank(jobs: Sequence[Job]) -> list[Job]:
    """Best val/dice first; jobs without a result last, in job order."""
    return sorted(
        jobs,
        key=lambda j: (j.best_val_dice is None, -(j.best_val_dice or 0.0), _job_sort_key(j.path)),
    )


def split_overrides(jobs: Sequence[Job]) -> tuple[list[str], dict[str, str]]:
    """(keys whose value differs between jobs, in first-seen order; {key: value} shared by all)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    varying, shared = [], {}
    for key in keys:
        values = {job.overrides.get(key) for job in jobs}
        if len(values) == 1 and None not in values:
            shared[key] = next(iter(values))
        else:
            varying.append(key)
    return varying, shared


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fold_checkpoints(report: SweepReport) -> dict[int, str]:
    """``{fold: best checkpoint}`` of a sweep over ``data.fold`` (the jobs that saved one), in
    fold order; empty for other sweeps. Where several jobs trained one fold (a sweep over folds
    and another option), the fold's checkpoint is its best job's."""
    if "data.fold" not in report.varying:
        return {}
    found: dict[int, str] = {}
    for job in report.jobs:  # best first: the first job of a fold is its best
        fold, ckpt = job.overrides.get("data.fold", ""), job.get("best_checkpoint")
        if fold.isdigit() and ckpt and job.best_val_dice is not None:
            found.setdefault(int(fold), str(ckpt))
    return dict(sorted(found.items()))


def format_table(report: SweepReport) -> str:
    """The report as text: a header, then one row per job, best first."""
    header = ["rank", "job", *report.varying, "best val/dice", "epoch", "epochs", "time s", "img/s"]
    rows = []
    for i, job in enumerate(report.jobs, 1):
        dice = job.best_val_dice
        rows.append(
            [
                str(i) if dice is not None else "-",
                job.name,
                *(short_value(job.overrides.get(k, "-")) for k in report.varying),
                NO_RESULT
                if dice is None
                else _fmt(dice) + ("" if job.status == "completed" else f" ({job.status})"),
                _fmt(job.get("best_epoch")),
                _fmt(job.get("epochs_run"), 2),
                _fmt(job.get("wall_time_s"), 1),
                _fmt(job.get("train_images_per_s"), 1),
            ]
        )
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = [f"sweep: {report.sweep_dir}"]
    done = sum(j.best_val_dice is not None for j in report.jobs)
    lines.append(f"jobs:  {len(report.jobs)} ({done} with a result)")
    if report.shared:
        lines.append("shared overrides: " + " ".join(f"{k}={v}" for k, v in report.shared.items()))
    lines.append("")
    for row in [header, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for job in report.jobs:  # why a job has no result, or did not complete
        if job.status != "completed":
            error = job.get("error")
            lines.append(f"job {job.name}: {job.status}" + (f": {error}" if error else ""))
    if report.best is not None:
        best = report.best
        lines += [
            "",
            f"best: job {best.name}, val/dice {best.best_val_dice:.4f} "
            f"(epoch {_fmt(best.get('best_epoch'))})",
            f"      {best.get('best_checkpoint') or 'no checkpoint saved'}",
        ]
    folds = fold_checkpoints(report)
    if folds:
        lines += [
            "",
            f"fold checkpoints ({len(folds)} folds: an ensemble of them, the mean of their "
            "probabilities):",
            "      ckpt_path=[" + ",".join(folds.values()) + "]",
        ]
    if report.optuna and "best_value" in report.optuna:
        params = " ".join(f"{k}={v}" for k, v in (report.optuna.get("best_params") or {}).items())
        lines.append(f"optuna best value {report.optuna['best_value']}: {params}")
    return "\n".join(lines)


CSV_COLUMNS = (
    "best_val_dice",
    "best_epoch",
    "epochs_run",
    "wall_time_s",
    "train_images_per_s",
    "best_checkpoint",
    "git_commit",
    "git_dirty",
)


def write_csv(report: SweepReport, path: Path) -> Path:
    """One row per job, best first: rank, job, status, the summary's numbers, every override."""
    keys = [*report.varying, *report.shared]
    with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "job", "status", *CSV_COLUMNS, *keys])
        for i, job in enumerate(report.jobs, 1):
            writer.writerow(
                [
                    i if job.best_val_dice is not None else "",
                    job.name,
                    job.status,
                    *("" if job.get(c) is None else job.get(c) for c in CSV_COLUMNS),
                    *(job.overrides.get(k, "") for k in keys),
                ]
            )
    return path


def _numbers(values: Sequence[str | None]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def short_value(value: str) -> str:
    """An override's value for display: long floats to 4 significant digits (``3.57e-04``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if value.lstrip("+-").isdigit() or len(value) <= 8:
        return value
    return f"{number:.4g}" if 1e-3 <= abs(number) < 1e4 else f"{number:.3e}"


def plot_report(report: SweepReport, path: Path) -> Path:
    """A PNG: the jobs' best val/dice as bars, best on top; below, for each numeric override that
    varies (up to 4), best val/dice against its value (log scale where it spans 10x or more)."""
    jobs = report.jobs
    done = [j for j in jobs if j.best_val_dice is not None]
    numeric = []
    for key in report.varying:
        values = _numbers([j.overrides.get(key) for j in done])
        if values is not None and len(set(values)) > 1:
            numeric.append((key, values))
    numeric = numeric[:4]

    bars_height = max(2.0, 0.3 * len(jobs) + 1.0)
    fig = Figure(figsize=(11, bars_height + (3.2 if numeric else 0.0)), layout="constrained")
    FigureCanvasAgg(fig)
    if numeric:
        grid = fig.add_gridspec(2, len(numeric), height_ratios=[bars_height, 3.2])
        ax = fig.add_subplot(grid[0, :])
        scatter_axes = [fig.add_subplot(grid[1, i]) for i in range(len(numeric))]
    else:
        ax, scatter_axes = fig.add_subplot(), []

    labels = []
    for job in jobs:
        shown = " ".join(
            f"{k.rsplit('.', 1)[-1]}={short_value(job.overrides.get(k, '-'))}"
            for k in report.varying
        )
        label = f"job {job.name}" + (f": {shown}" if shown else "")
        labels.append(label if len(label) <= 70 else label[:67] + "...")
    y = list(range(len(jobs)))
    dice = [j.best_val_dice or 0.0 for j in jobs]
    colours = ["tab:green" if i == 0 and report.best else "tab:blue" for i in y]
    ax.barh(y, dice, color=colours)
    for yi, job in zip(y, jobs, strict=True):
        text = NO_RESULT if job.best_val_dice is None else f"{job.best_val_dice:.4f}"
        ax.text(dice[yi] + 0.01, yi, text, va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # best on top
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("best val/dice")
    ax.set_title(f"{report.sweep_dir.name}: {len(done)} of {len(jobs)} jobs, best first")

    scores = [j.best_val_dice for j in done]
    for ax, (key, values) in zip(scatter_axes, numeric, strict=True):
        ax.scatter(values, scores, color="tab:blue", label="job")
        if report.best is not None:  # done is ranked: the first is the best
            ax.scatter([values[0]], [scores[0]], color="tab:green", s=70, zorder=3, label="best")
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        else:  # 1e-4 .. 3e-4 as 1.0 .. 3.0 x 1e-4, not five crowded decimals
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.set_xlabel(key)
        ax.set_ylabel("best val/dice")
        ax.grid(alpha=0.3)
    if scatter_axes:
        scatter_axes[0].legend(fontsize=8)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def read_optuna_results(sweep_dir: Path) -> dict[str, Any] | None:
    """Optuna's ``optimization_results.yaml`` (best_params, best_value), or None."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return None
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return content if isinstance(content, dict) else None


def report(
    sweep_dir: str | Path, write: bool = True, out_dir: str | Path | None = None
) -> SweepReport:
    """Read a sweep folder, rank its jobs, and (``write``) save the CSV and the PNG into it, or
    into ``out_dir``.

    Raises:
        SweepNotFoundError: not a sweep folder.
        CarsegError: the report files cannot be written there (a read-only folder).
    """
    sweep = Path(sweep_dir).expanduser()
    jobs = rank(collect_jobs(sweep))
    varying, shared = split_overrides(jobs)
    result = SweepReport(sweep, jobs, varying, shared, read_optuna_results(sweep))
    if write:
        folder = Path(out_dir).expanduser() if out_dir is not None else sweep
        try:
            folder.mkdir(parents=True, exist_ok=True)
            result.csv_path = write_csv(result, folder / CSV_FILE)
            result.plot_path = plot_report(result, folder / PLOT_FILE)
        except OSError as err:
            raise CarsegError(
                f"Cannot write the report into {folder} ({err.strerror or err}): give a folder "
                "you can write with --out <folder>, or --no-write to print the table only"
            ) from None
    result.text = format_table(result)
    if write:
        result.text += f"\n\nwritten: {result.csv_path}\n         {result.plot_path}"
    return result


def latest_sweep(multiruns_dir: str | Path) -> Path:
    """The newest sweep folder under ``multiruns_dir`` (names are times, so the last by name).

    Raises:
        SweepNotFoundError: no sweep there.
    """
    root = Path(multiruns_dir)
    sweeps = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not sweeps:
        raise SweepNotFoundError(
            f"No sweep in {root}: run one with `python src/train.py -m ...` or name the folder"
        )
    return sweeps[-1]
