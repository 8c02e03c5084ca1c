"""What Hydra's configs need from Python, registered once when an entry point imports
``carseg.runs.entrypoint``: the project's root (``${carseg_root:}``, where ``outputs/`` goes) and
the checkpoint file name of the monitored metric (``${monitor_filename:val/dice}``)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """``$CARSEG_ROOT`` if set, else the checkout holding this package (the folder with
    ``conf/``), else the current folder."""
    if os.environ.get("CARSEG_ROOT"):
        return Path(os.environ["CARSEG_ROOT"])
    checkout = Path(__file__).resolve().parents[3]
    return checkout if (checkout / "conf").is_dir() else Path.cwd()


def monitor_filename(metric: str) -> str:
    """``val/dice`` -> ``dice_{val/dice:.4f}``: the metric in a checkpoint's file name (Lightning's
    pattern). Its name is shortened to the last part: a ``/`` would make a sub-folder."""
    return f"{metric.rsplit('/', 1)[-1]}_{{{metric}:.4f}}"


def register_resolvers() -> None:
    """``${carseg_root:}`` (conf/paths/default.yaml) and ``${monitor_filename:<metric>}``
    (conf/callbacks/default.yaml)."""
    if not OmegaConf.has_resolver("carseg_root"):
        OmegaConf.register_new_resolver("carseg_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("monitor_filename"):
        OmegaConf.register_new_resolver("monitor_filename", monitor_filename)


register_resolvers()
