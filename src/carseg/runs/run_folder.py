"""A run folder belongs to one run.

Hydra writes a run's config into its folder before the run starts, so two runs given one folder
(the same ``hydra.run.dir``, or two commands started in the same second) would overwrite each
other's config, ``summary.json`` and checkpoints. ``RunFolderGuard``, a Hydra callback
(``conf/hydra/default.yaml``), acts before Hydra writes anything: a default folder (named by the
second) is claimed by making it, and one that is taken gives way to the next free name,
``<time>-2``; a folder given with ``hydra.run.dir`` that holds another run is refused, unless
this run continues that one: a resume of that folder's checkpoint (``ckpt_path=last`` or a path
inside it, or a job SLURM requeued), ``overwrite=true`` or ``resume=true`` where a task has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from carseg.utils.checks import check_writable
from carseg.utils.errors import ConfigError, exit_user_error
from carseg.utils.processes import is_first_process, started_by_launcher

# What a finished or running run leaves in its folder.
RUN_MARKERS = (".hydra", "summary.json", "checkpoints", "metrics.json", "submission.csv")

_made_here: set[Path] = set()  # run folders that this process found absent or empty
_job_started = False  # whether Hydra has called a task function in this process


def job_started() -> bool:
    """Whether Hydra got as far as calling the task: before it, any failure is the config's."""
    return _job_started


def reset_job_started() -> None:
    global _job_started
    _job_started = False


def earlier_run(folder: Path) -> list[str]:
    """The names in ``folder`` that show a run already used it (empty if none).

    Under a launcher that starts every rank itself (torchrun, srun), the ranks of one job write
    their ``.hydra`` records side by side, so only a finished run's records count there.
    """
    markers = [m for m in RUN_MARKERS if not (started_by_launcher() and m == ".hydra")]
    return [name for name in markers if (folder / name).exists()]


def check_run_folder(folder: Path, *, ckpt_path: Any, overwrite: bool) -> None:
    """Refuse ``folder`` if an earlier run used it, unless this run continues that one.

    Raises:
        ConfigError: the folder holds an earlier run, with how to go on.
    """
    if not is_first_process():
        return  # another rank of this job: rank 0 has claimed the folder
    found = earlier_run(folder)
    if not found:
        if not folder.exists() or not any(folder.iterdir()):
            _made_here.add(folder.resolve())
        return
    if overwrite:
        return
    from carseg.training.resume import newest_in_run, requeued

    if requeued() and newest_in_run(folder) is not None:
        return  # the same job, run again by SLURM: it resumes in its folder
    if ckpt_path == "last" and (folder / "checkpoints" / "last.ckpt").is_file():
        return
    if ckpt_path and ckpt_path != "last":
        resolved = Path(str(ckpt_path)).expanduser().resolve()
        if folder.resolve() in resolved.parents:
            return
    resumable = (folder / "checkpoints" / "last.ckpt").is_file()
    how = (
        "or resume that run with ckpt_path=last"
        if resumable
        else "or delete it: it saved no checkpoint to resume from"
    )
    raise ConfigError(
        f"The run folder {folder} already holds a run ({', '.join(found)}): this run would "
        "overwrite its records and mix its checkpoints with this one's. Leave hydra.run.dir out "
        f"for a new folder, give another one, {how}"
    )


def claim(folder: Path) -> Path:
    """Make ``folder``, or, if it exists (the default folder is named by the second: a command
    started in the same second as another), the next free ``<folder>-2``, ``-3`` ... Making it
    is the claim: of two commands that race for a name, one gets it and the other the next."""
    candidate, number = folder, 1
    while True:
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            number += 1
            candidate = Path(f"{folder}-{number}")
            continue
        except OSError as err:
            raise ConfigError(
                f"Cannot make the run folder {candidate} ({err.strerror or err}): send runs to a "
                "folder you can write with paths.log_dir=<folder> (or hydra.run.dir=<folder>)"
            ) from None
        _made_here.add(candidate.resolve())
        return candidate


def made_by_this_run(folder: Path) -> bool:
    """Whether ``folder`` was absent or empty when this process's run claimed it."""
    return folder.resolve() in _made_here


class RunFolderGuard(Callback):
    """Hydra callback: refuse a run folder or sweep folder that an earlier run used, and note
    when a job starts (``carseg.runs.entrypoint.run`` tells a config error from a crash by it)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _job_started
        _job_started = True

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir)
        chosen = any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
        try:
            if not chosen and is_first_process():
                claimed = claim(folder)
                if claimed != folder:
                    with read_write(config.hydra.run):
                        config.hydra.run.dir = str(claimed)
                return
            check_run_folder(
                folder,
                ckpt_path=config.get("ckpt_path"),
                overwrite=config.get("overwrite") is True or config.get("resume") is True,
            )
            if is_first_process():
                check_writable(folder, "hydra.run.dir")
        except ConfigError as err:
            exit_user_error(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            check_writable(sweep, "hydra.sweep.dir")
        except ConfigError as err:
            exit_user_error(err)
        jobs = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()] if sweep.is_dir() else []
        if jobs:
            exit_user_error(
                ConfigError(
                    f"The sweep folder {sweep} already holds {len(jobs)} job(s) of an earlier "
                    "sweep: this one would overwrite them. Leave hydra.sweep.dir out for a new "
                    "folder, or give another one"
                )
            )
