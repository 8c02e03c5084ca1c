"""notebooks/inspect_predictions.ipynb runs headless on a trained model, shows the checkpoint's
validation images, and gives them the Dice eval.py gives them."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest

from support.entry import REPO, run_entry

pytestmark = pytest.mark.slow

N_IMAGES = 3
# appended to the notebook in memory (the file is not changed): what its kernel computed
REPORT_CELL = """import json
print("REPORT " + json.dumps({"dice": dice, "ids": list(dataset.ids), "size": list(record.size)}))
"""


def run_notebook(ckpt, data) -> list:
    """The notebook's code cells, executed in a fresh kernel with the report cell at the end."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(REPO / "notebooks" / "inspect_predictions.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
    saved = {k: os.environ.get(k) for k in ("CARSEG_CKPT", "CARSEG_DATA", "CARSEG_N_IMAGES")}
    os.environ.update(CARSEG_CKPT=str(ckpt), CARSEG_DATA=str(data), CARSEG_N_IMAGES=str(N_IMAGES))
    try:
        nbclient.NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        ).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_notebook_shows_the_validation_images_with_evals_dice(trained, tmp_path):
    from PIL import Image

    from carseg.inference.loading import load_model

    _, ckpt, data = trained
    cells = run_notebook(ckpt, data)
    printed = "".join(out.get("text", "") for cell in cells for out in cell.outputs)
    assert f"checkpoint: {ckpt}" in printed  # the model it was given, not the newest one
    (line,) = [x for x in printed.splitlines() if x.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))

    # the cars the checkpoint held out, as its record names them
    record = load_model(ckpt)[1]
    assert len(report["ids"]) == N_IMAGES == len(report["dice"])
    assert {i.rsplit("_", 1)[0] for i in report["ids"]} <= set(record.split.val_cars)
    assert report["size"] == list(record.size)

    # a second path to the same numbers: eval.py scores those images alike
    scored = run_entry(tmp_path, "eval", f"ckpt_path={ckpt}", "data=carvana", f"data.root={data}")
    assert scored.returncode == 0, scored.stderr[-3000:]
    (metrics,) = (tmp_path / "outputs" / "eval" / "runs").glob("*/metrics.json")
    per_image = json.loads(metrics.read_text())["per_image"]
    assert report["dice"] == pytest.approx({i: per_image[i] for i in report["ids"]}, abs=1e-6)
    mean = np.mean(list(report["dice"].values()))
    assert f"mean Dice over {N_IMAGES} images at full resolution: {mean:.4f}" in printed

    # the figure: a row of 4 panels (image, true mask, predicted, errors) per image
    (png,) = [
        out["data"]["image/png"]
        for cell in cells
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    with Image.open(io.BytesIO(base64.b64decode(png))) as figure:
        width, height = figure.size
        colours = len(np.unique(np.asarray(figure.convert("RGB")).reshape(-1, 3), axis=0))
    assert width / height == pytest.approx(12 / (2.2 * N_IMAGES), rel=0.1)
    assert colours > 50  # photos drawn, not an empty canvas
