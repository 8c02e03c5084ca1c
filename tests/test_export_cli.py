"""src/export.py as a user runs it: ONNX and TorchScript files that compute what the checkpoint
does, and ONNX predictions like the checkpoint's."""

from __future__ import annotations

import pytest

from carseg.data.rle import read_rle_csv, rle_decode
from support.entry import run_entry, run_script
from support.refusals import Row, assert_refused, checkpoint, crafted_checkpoint, nan_checkpoint

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eager_and_onnx_predicts_like_the_checkpoint(trained, tmp_path, fmt):
    root, ckpt, data = trained
    out = tmp_path / f"model.{fmt}"
    proc = run_script(root, "export", f"ckpt_path={ckpt}", f"format={fmt}", f"output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff = float(proc.stdout.split("max |logits - eager logits| =")[1].split()[0])
    assert diff < 1e-4
    if fmt == "torchscript":  # (the check is the same for both formats)
        refused = run_script(root, "export", f"ckpt_path={ckpt}", f"format={fmt}", f"output={out}")
        assert refused.returncode == 2 and "overwrite=true" in refused.stderr
        return
    images = data / "train"
    a, b = tmp_path / "from_ckpt", tmp_path / "from_onnx"
    assert (
        run_script(
            root, "predict", f"ckpt_path={ckpt}", f"input={images}", f"output_dir={a}"
        ).returncode
        == 0
    )
    proc = run_script(root, "predict", f"onnx_path={out}", f"input={images}", f"output_dir={b}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks_a, masks_b = read_rle_csv(a / "submission.csv"), read_rle_csv(b / "submission.csv")
    assert list(masks_a) == list(masks_b)
    differing = sum(
        int((rle_decode(masks_a[k], (64, 96)) != rle_decode(masks_b[k], (64, 96))).sum())
        for k in masks_a
    )
    assert differing <= 0.0001 * 64 * 96 * len(masks_a)  # a pixel at exactly 0.5 may flip


# A user's mistake, one row each: one message, exit 2, nothing written (support.refusals).
REFUSED = [
    Row("export in an unknown format", "export", lambda t: ["ckpt_path=x", "format=tflite"],
        ["format='tflite'", "onnx"]),
    Row("output= the checkpoint itself", "export",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"output={checkpoint(t)}", "overwrite=true"],
        ["is the checkpoint it exports"]),
    Row("a list of checkpoints", "export",
        lambda t: [f"ckpt_path=[{checkpoint(t)},{checkpoint(t)}]"],
        ["export takes one checkpoint"]),
    Row("output= a folder, with overwrite=true", "export",
        lambda t: [f"ckpt_path={checkpoint(t)}", f"output={t}", "overwrite=true"],
        ["is a folder: give the file to write"]),
    Row("a checkpoint holding Inf weights", "export",
        lambda t: [f"ckpt_path={nan_checkpoint(t, float('inf'))}"],
        ["holds NaN or infinite weights"]),
    Row("a checkpoint whose loss is os.system, trusted_targets=os.system", "export",
        lambda t: [f"ckpt_path={crafted_checkpoint(t)}", "trusted_targets=os.system"],
        ["_target_ 'os.system' is a function, not a class"]),
]  # fmt: skip


@pytest.mark.parametrize("row", REFUSED, ids=lambda r: r.name)
def test_a_mistake_gets_one_message_and_exit_2(row, tmp_path):
    assert_refused(row, tmp_path)


def test_a_read_only_destination_is_refused(trained, tmp_path):
    from support.files import read_only

    root, ckpt, _ = trained
    mount = tmp_path / "mount"
    mount.mkdir()
    with read_only(mount):
        proc = run_entry(root, "export", f"ckpt_path={ckpt}", f"output={mount / 'm.onnx'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (
        "cannot be written (Read-only file system)" in proc.stderr and list(mount.iterdir()) == []
    )
