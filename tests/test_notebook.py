"""notebooks/inspect_predictions.ipynb runs headless on a trained model."""

from __future__ import annotations

import os

import pytest

from support.entry import REPO

pytestmark = pytest.mark.slow


def test_notebook_runs_headless(trained):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _, ckpt, data = trained
    notebook = nbformat.read(REPO / "notebooks" / "inspect_predictions.ipynb", as_version=4)
    os.environ.update(CARSEG_CKPT=str(ckpt), CARSEG_DATA=str(data), CARSEG_N_IMAGES="3")
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        )
        client.execute()
    finally:
        for key in ("CARSEG_CKPT", "CARSEG_DATA", "CARSEG_N_IMAGES"):
            os.environ.pop(key)
    printed = "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "mean Dice over 3 images at full resolution" in printed
    images = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert images  # the figure was drawn
