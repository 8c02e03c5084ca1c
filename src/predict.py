"""Predict masks for new images: ``python src/predict.py ckpt_path=... input=DIR_OR_FILE``.

Masks at each image's original size, optional overlays, and Kaggle's submission.csv; from a
checkpoint or from an ONNX model (``onnx_path=...``), on any number of devices through Lightning's
predict loop. The work is in ``carseg.inference.predict_loop``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from carseg.training.checkpoint_io import load_model
from carseg.utils.checks import check_int, check_threshold
from carseg.runs.entrypoint import require, run, user_errors_exit
from carseg.data.datamodule import resolve_workers
from carseg.utils.errors import ConfigError
from carseg.data.image_io import list_images
from carseg.inference.predictor import Predictor, input_size
from carseg.inference.predict_loop import (
    Outputs,
    PredictionModule,
    check_output_dir,
    check_unique_names,
    clear,
    plan,
)
from carseg.inference.predict_loop import run as predict
from carseg.utils.processes import is_first_process
from carseg.training.train import build_trainer, resolve_trainer_config


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg.paths.output_dir):
        require(cfg, "input", "an image file or a folder of images, e.g. input=photos/")
        if bool(cfg.ckpt_path) == bool(cfg.onnx_path):
            raise ConfigError("give one model: ckpt_path=<checkpoint> or onnx_path=<model.onnx>")
        if cfg.resume and cfg.overwrite:
            raise ConfigError("resume=true and overwrite=true: choose one")
        check_int("batch_size", cfg.batch_size, 1)
        if cfg.threshold is not None:
            check_threshold("threshold", cfg.threshold)
        trainer_cfg = resolve_trainer_config(OmegaConf.to_container(cfg.trainer, resolve=True))
        paths = list_images(cfg.input)
        check_unique_names(paths)
        outputs = Outputs(Path(cfg.output_dir), overlays=cfg.overlays)
        if is_first_process():  # the other processes follow the first's checks
            check_output_dir(outputs.folder, Path(cfg.input), cfg.overwrite or cfg.resume)
            if cfg.overwrite:
                clear(outputs)
        if cfg.ckpt_path:
            model, info = load_model(cfg.ckpt_path)
            size, threshold, forward = info.size, info.threshold, None
        else:
            from carseg.inference.export import onnx_metadata
            from carseg.inference.predictor import onnx_forward

            meta = onnx_metadata(cfg.onnx_path)
            model, size, threshold = None, meta["size"], meta["threshold"]
            forward = onnx_forward(cfg.onnx_path)
            trainer_cfg["accelerator"] = "cpu"  # ONNX Runtime's CPU provider
        predictor = Predictor(
            forward, input_size(size, cfg.size), cfg.tta, cfg.tile, cfg.tile_overlap
        )
        threshold = threshold if cfg.threshold is None else cfg.threshold
        module = PredictionModule(predictor, threshold, model)
        settings = {
            "model": str(Path(cfg.ckpt_path or cfg.onnx_path).resolve()),
            "threshold": threshold,
            "size": list(predictor.size),
            "tta": cfg.tta,
            "tile": None if cfg.tile is None else list(cfg.tile),
            "tile_overlap": cfg.tile_overlap,
        }
        todo, writer = plan(paths, outputs, cfg.resume, settings)
        trainer = build_trainer(trainer_cfg, callbacks=[writer])
        workers = resolve_workers(cfg.num_workers, trainer.num_devices)
        merged = predict(trainer, module, todo, writer, cfg.batch_size, workers)
    if merged is None:  # not the first process: it has written its share
        return
    print(f"\n{merged.written} masks in {outputs.masks}")
    if cfg.overlays:
        print(f"overlays in {outputs.folder / 'overlays'}")
    print(f"submission: {merged.submission} ({merged.written} rows)")
    if merged.failed:
        print(
            f"\nerror: {len(merged.failed)} of {len(paths)} inputs could not be read and were "
            f"skipped (listed in {outputs.failed}):",
            file=sys.stderr,
        )
        for name, why in list(merged.failed.items())[:20]:
            print(f"  {name}: {why}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    run(main)
