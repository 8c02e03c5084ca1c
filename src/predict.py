"""Predict masks for new images: ``python src/predict.py ckpt_path=... input=DIR_OR_FILE``.

Masks at each image's original size, optional overlays, and Kaggle's submission.csv; from a
checkpoint, an ONNX model (``onnx_path=...``) or an ensemble (``ckpt_path=[a,b]``), on any number
of devices through Lightning's predict loop. The work is in ``carseg.inference.predict``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from carseg.inference.predict import predict
from carseg.runs.entrypoint import run, user_errors_exit
from carseg.utils.errors import USER_ERROR


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg.paths.output_dir):
        merged, outputs, n_inputs = predict(cfg)
    if merged is None:  # not the first process: it has written its share
        return
    print(f"\n{merged.written} masks in {outputs.masks}")
    for folder, wanted in (("overlays", cfg.overlays), ("cutouts", cfg.cutouts),
                           ("composites", cfg.background is not None)):  # fmt: skip
        if wanted:
            print(f"{folder} in {outputs.folder / folder}")
    print(f"submission: {merged.submission} ({merged.written} rows)")
    if merged.failed:
        print(
            f"\nerror: {len(merged.failed)} of {n_inputs} inputs could not be read and were "
            f"skipped (listed in {outputs.failed}):",
            file=sys.stderr,
        )
        for name, why in list(merged.failed.items())[:20]:
            print(f"  {name}: {why}", file=sys.stderr)
        raise SystemExit(USER_ERROR)


if __name__ == "__main__":
    run(main)
