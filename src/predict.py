"""Predict masks for new images: ``python src/predict.py ckpt_path=... input=DIR_OR_FILE``.

Masks at each image's original size, optional overlays, and Kaggle's submission.csv; from a
checkpoint or from an ONNX model (``onnx_path=...``). The work is in ``carseg.inference``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from carseg.checkpoint import load_model
from carseg.checks import check_device, check_int, check_threshold
from carseg.cli import require, run, user_errors_exit
from carseg.errors import ConfigError
from carseg.image_io import list_images
from carseg.inference import (
    Predictor,
    check_output_dir,
    check_unique_names,
    input_size,
    onnx_forward,
    predict_files,
    torch_forward,
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg.paths.output_dir):
        require(cfg, "input", "an image file or a folder of images, e.g. input=photos/")
        if bool(cfg.ckpt_path) == bool(cfg.onnx_path):
            raise ConfigError("give one model: ckpt_path=<checkpoint> or onnx_path=<model.onnx>")
        check_int("batch_size", cfg.batch_size, 1)
        if cfg.threshold is not None:
            check_threshold("threshold", cfg.threshold)
        paths = list_images(cfg.input)
        check_unique_names(paths)
        output_dir = Path(cfg.output_dir)
        check_output_dir(output_dir, Path(cfg.input), cfg.overwrite)
        if cfg.ckpt_path:
            device = check_device("device", cfg.device)
            model, info = load_model(cfg.ckpt_path, device)
            forward, size, threshold = torch_forward(model, device), info.size, info.threshold
        else:
            from carseg.export import onnx_metadata

            meta = onnx_metadata(cfg.onnx_path)
            forward, size, threshold = onnx_forward(cfg.onnx_path), meta["size"], meta["threshold"]
        predictor = Predictor(forward, input_size(size, cfg.size), tta=cfg.tta)
        threshold = threshold if cfg.threshold is None else cfg.threshold
        run = predict_files(
            predictor, paths, output_dir, threshold, cfg.batch_size, overlays=cfg.overlays
        )
    print(f"\n{run.written} masks in {output_dir / 'masks'}")
    if cfg.overlays:
        print(f"overlays in {output_dir / 'overlays'}")
    print(f"submission: {run.submission} ({run.written} rows)")
    if run.failed:
        print(
            f"\nerror: {len(run.failed)} of {len(paths)} inputs could not be read and were skipped "
            f"(listed in {run.failed_list}):",
            file=sys.stderr,
        )
        for name, why in list(run.failed.items())[:20]:
            print(f"  {name}: {why}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    run(main)
