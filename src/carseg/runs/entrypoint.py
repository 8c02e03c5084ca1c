"""How an entry point runs: a config Hydra cannot compose and a ``CarsegError`` both end the command
with one message and exit status 2; a refused run leaves no empty run folder behind.

``src/train.py``, ``eval.py``, ``predict.py``, ``export.py`` and ``sweep_report.py`` import this
module before they compose a config (it registers the ``carseg_root`` resolver).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra.errors import InstantiationException

from carseg.runs import config  # noqa: F401  (registers the resolvers conf/ uses)
from carseg.runs.run_folder import job_started, made_by_this_run, reset_job_started
from carseg.utils.errors import (
    USER_ERROR,
    CarsegError,
    ConfigError,
    TrainingDivergedError,
    exit_user_error,
    from_os_error,
)

# Lightning 2.6 trips torch 2.13's deprecation of pytree's LeafSpec on every run: nothing to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# A run resumed from a checkpoint saved inside an epoch (a budget's or a signal's stop) draws a new
# random order for the rest of that epoch: what carseg's shuffled training wants, nothing to fix.
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the")

# Keys that moved: the old spelling is refused with the new one, before Hydra composes.
RENAMED = {
    "model.lr": "model.optimizer.lr",
    "model.weight_decay": "model.optimizer.weight_decay",
    "model.in_channels": "model.net.in_channels",
    "model.base_width": "model.net.base_width",
    "model.depth": "model.net.depth",
    "model.bilinear": "model.net.bilinear",
    "model.batch_norm": "model.net.batch_norm",
    "model.dice_weight": "model.loss.dice_weight",
    "model.scheduler": "model/scheduler",
    "model.loss": "model/loss",
    "device": "trainer.accelerator (cpu, gpu) and trainer.devices",
}


def check_renamed(argv: list[str]) -> None:
    """Refuse an override of a key that moved, naming its new spelling.

    Raises:
        ConfigError: ``model.lr=1e-3`` and the like.
    """
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in RENAMED:
            new = RENAMED[key]
            example = f" ({arg} -> {new}={value})" if " " not in new else ""
            raise ConfigError(f"{key} is now {new}{example}")


def run(main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point; a config Hydra cannot compose (an unknown key or choice,
    a malformed override) exits with status 2 like every other user mistake, not Hydra's 1.

    Hydra prints its own one-line message for those, without a traceback.
    """
    try:
        check_renamed(sys.argv[1:])
    except ConfigError as err:
        exit_user_error(err)
    reset_job_started()  # (an earlier run in this process may have set it)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not job_started():  # the config did not compose
            raise SystemExit(USER_ERROR) from None
        raise


@contextlib.contextmanager
def user_errors_exit(run_dir: str | Path | None = None) -> Iterator[None]:
    """Print a ``CarsegError`` (also when Hydra's instantiate wrapped it), a full disk or a
    destination that cannot be written (``carseg.utils.errors.from_os_error``), and exit with
    status 2.

    Other exceptions are bugs and keep their traceback.

    Args:
        run_dir: this run's folder. If this run made it and a mistake stopped the run before it
            wrote anything but Hydra's records, it is removed, so a refused command leaves no
            empty run behind.
    """
    try:
        yield
    except (CarsegError, InstantiationException, OSError, RuntimeError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if not isinstance(cause, CarsegError):
            cause = from_os_error(cause) if isinstance(cause, OSError | RuntimeError) else None
        if cause is None:
            raise
        if run_dir is not None and not isinstance(cause, TrainingDivergedError):
            _discard_if_empty(Path(run_dir))
        exit_user_error(cause)


# What makes a refused run's folder worth keeping: something to resume from, or results.
WORTH_KEEPING = ("*.ckpt", "masks", "metrics.json", "submission.csv", "rows-rank*.csv")


def _discard_if_empty(run_dir: Path) -> None:
    """Remove the folder of a run this process made that stopped with nothing worth keeping
    (only Hydra's records, logs, TensorBoard events, a summary of the failure), so that the
    fixed command can run there again."""
    if not made_by_this_run(run_dir) or not run_dir.is_dir():
        return
    if not any(next(run_dir.rglob(pattern), None) for pattern in WORTH_KEEPING):
        shutil.rmtree(run_dir, ignore_errors=True)
