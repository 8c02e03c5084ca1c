"""Predict masks for new images: ``python src/predict.py ckpt_path=... input=DIR_OR_FILE``.

Masks at each image's original size, optional overlays, and Kaggle's submission.csv; from a
checkpoint or from an ONNX model (``onnx_path=...``). The work is in ``carseg.inference``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CARSEG_ROOT", str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from carseg.cli import require, user_errors_exit  # noqa: E402
from carseg.errors import ConfigError  # noqa: E402
from carseg.inference import (  # noqa: E402
    Predictor,
    check_output_dir,
    input_size,
    list_images,
    load_checkpoint,
    onnx_forward,
    predict_files,
    torch_forward,
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors_exit():
        require(cfg, "input", "an image file or a folder of images, e.g. input=photos/")
        if bool(cfg.ckpt_path) == bool(cfg.onnx_path):
            raise ConfigError("give one model: ckpt_path=<checkpoint> or onnx_path=<model.onnx>")
        paths = list_images(cfg.input)
        output_dir = Path(cfg.output_dir)
        check_output_dir(output_dir, Path(cfg.input), cfg.overwrite)
        if cfg.ckpt_path:
            model, info = load_checkpoint(cfg.ckpt_path, cfg.device)
            forward, size, threshold = torch_forward(model, cfg.device), info.size, info.threshold
        else:
            from carseg.export import onnx_metadata

            meta = onnx_metadata(cfg.onnx_path)
            forward, size, threshold = onnx_forward(cfg.onnx_path), meta["size"], meta["threshold"]
        predictor = Predictor(forward, input_size(size, cfg.size), tta=cfg.tta)
        threshold = threshold if cfg.threshold is None else cfg.threshold
        submission = predict_files(
            predictor, paths, output_dir, threshold, cfg.batch_size, overlays=cfg.overlays
        )
    print(f"\n{len(paths)} masks in {output_dir / 'masks'}")
    if cfg.overlays:
        print(f"overlays in {output_dir / 'overlays'}")
    print(f"submission: {submission}")


if __name__ == "__main__":
    main()
