"""What the entry points share, set up once on import: the project root for the configs, one clear
message and exit status 2 for a user's mistake, and quiet third-party noise.

``src/train.py``, ``eval.py``, ``predict.py``, ``export.py`` and ``sweep_report.py`` import this
module before they compose a config.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from carseg.utils.errors import CarsegError, ConfigError

# Lightning 2.6 trips torch 2.13's deprecation of pytree's LeafSpec on every run: nothing to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def project_root() -> Path:
    """Where ``outputs/`` goes: ``$CARSEG_ROOT`` if set, else the checkout holding this package
    (the folder with ``conf/``), else the current folder."""
    if os.environ.get("CARSEG_ROOT"):
        return Path(os.environ["CARSEG_ROOT"])
    checkout = Path(__file__).resolve().parents[3]
    return checkout if (checkout / "conf").is_dir() else Path.cwd()


# conf/paths/default.yaml: root_dir: ${carseg_root:}
if not OmegaConf.has_resolver("carseg_root"):
    OmegaConf.register_new_resolver("carseg_root", lambda: str(project_root()))


def run(main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point; a config Hydra cannot compose (an unknown key or choice,
    a malformed override) exits with status 2 like every other user mistake, not Hydra's 1.

    Hydra prints its own one-line message for those, without a traceback.
    """
    from carseg.runs.run_folder import job_started, reset_job_started

    reset_job_started()  # (an earlier run in this process may have set it)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not job_started():  # the config did not compose
            raise SystemExit(2) from None
        raise


@contextlib.contextmanager
def user_errors_exit(run_dir: str | Path | None = None) -> Iterator[None]:
    """Print a ``CarsegError`` (also when Hydra's instantiate wrapped it) and exit with status 2.

    Other exceptions are bugs and keep their traceback.

    Args:
        run_dir: this run's folder. If this run made it and a mistake stopped the run before it
            wrote anything but Hydra's records, it is removed, so a refused command leaves no
            empty run behind.
    """
    try:
        yield
    except (CarsegError, InstantiationException) as err:
        cause = err if isinstance(err, CarsegError) else err.__cause__
        if not isinstance(cause, CarsegError):
            raise
        print(f"error: {cause}", file=sys.stderr)
        if run_dir is not None:
            _discard_if_empty(Path(run_dir))
        raise SystemExit(2) from None


def _discard_if_empty(run_dir: Path) -> None:
    from carseg.runs.run_folder import made_by_this_run

    if not made_by_this_run(run_dir) or not run_dir.is_dir():
        return
    kept = [p for p in run_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not kept:
        shutil.rmtree(run_dir, ignore_errors=True)


def require(cfg, key: str, what: str) -> None:
    """Stop with a message naming ``key`` when the config leaves it empty."""
    if cfg.get(key) in (None, ""):
        raise ConfigError(f"{key} is required: {what}")
