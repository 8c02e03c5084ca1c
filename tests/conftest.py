"""Shared fixtures: the real Carvana sample beside the repository, and tiny generated sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(
    os.environ.get("CARSEG_SAMPLE_DIR", REPO.parent / "shared" / "carvana_sample")
).resolve()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 32 real Carvana pairs (two cars) in Kaggle's layout; CI has them beside the repo."""
    if not (SAMPLE_DIR / "train").is_dir():
        pytest.skip(f"real Carvana sample not found at {SAMPLE_DIR} (set CARSEG_SAMPLE_DIR)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Carvana-like set: 5 cars x 16 views at 80x120, GIF masks and the RLE CSV."""
    from carseg.data.synthetic import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("data") / "tiny", n_cars=5, height=80, width=120, seed=0
    )


@pytest.fixture(scope="session", autouse=True)
def project_root(tmp_path_factory: pytest.TempPathFactory):
    """Runs and caches that tests make in this process land in a temporary project folder, not in
    the checkout's outputs/ ($CARSEG_ROOT; run_script and run_entry set their own)."""
    root = tmp_path_factory.mktemp("project")
    saved = os.environ.get("CARSEG_ROOT")
    os.environ["CARSEG_ROOT"] = str(root)
    yield root
    if saved is None:
        os.environ.pop("CARSEG_ROOT", None)
    else:
        os.environ["CARSEG_ROOT"] = saved


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(project root, best checkpoint, data folder) of a tiny model trained by train.py."""
    from support.entry import TINY_TRAIN, run_script

    root = tmp_path_factory.mktemp("trained")
    proc = run_script(root, "train", *TINY_TRAIN, "trainer.max_epochs=3", "model.optimizer.lr=3e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ckpt,) = (root / "outputs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt")
    (data,) = (root / "outputs" / "data").glob("synthetic-*")
    return root, ckpt, data
