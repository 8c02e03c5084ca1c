"""Predict masks for new images: the library behind ``src/predict.py``.

Masks at each image's original size, optional overlays, and Kaggle's ``submission.csv``, from a
checkpoint, an ONNX model or an ensemble, on any number of devices through the predict loop
(``carseg.inference.loop``); a killed run resumes (``carseg.inference.submission``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from carseg.data.image_io import list_images, subfolders_with_images
from carseg.inference.cutouts import parse_background
from carseg.inference.loop import (
    InferenceModule,
    PredictionSet,
    build_predictor,
    inference_trainer,
    inference_trainer_config,
    postprocess_of,
    run_loop,
)
from carseg.inference.mask_writer import MaskWriter
from carseg.inference.output_folder import (
    Outputs,
    check_output_dir,
    check_unique_names,
    clear,
    input_names,
)
from carseg.inference.submission import Merged, left_to_predict, merge
from carseg.utils.checks import check_bool, check_required, check_writable
from carseg.utils.errors import ConfigError
from carseg.utils.processes import is_first_process

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> tuple[Merged | None, Outputs, int]:
    """Predict the inputs of ``cfg`` (the composed ``conf/predict.yaml``).

    Returns:
        What was merged (None on every process but the first), where it was written, and the
        number of inputs.

    Raises:
        ConfigError, DataError, DataNotFoundError: a bad option, model, input or output folder.
    """
    check_required(cfg, "input", "an image file or a folder of images, e.g. input=photos/")
    for key in ("resume", "overwrite", "overlays", "cutouts"):
        check_bool(key, cfg[key])
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume=true and overwrite=true: choose one")
    postprocess = postprocess_of(cfg)
    trainer_cfg = inference_trainer_config(cfg)
    predictor, threshold, models = build_predictor(cfg)
    paths = list_images(cfg.input, recursive=check_bool("recursive", cfg.recursive))
    names = input_names(paths, Path(cfg.input))
    check_unique_names(names)
    skipped = [] if cfg.recursive else subfolders_with_images(cfg.input)
    if skipped:
        log.warning(
            "%d subfolder(s) of %s hold images that are not predicted (%s): recursive=true "
            "predicts them too",
            len(skipped),
            cfg.input,
            ", ".join(p.name + "/" for p in skipped[:5]),
        )
    feather = cfg.cutout_feather
    if isinstance(feather, bool) or not isinstance(feather, int | float) or not 0 <= feather <= 0.5:
        raise ConfigError(f"cutout_feather must be a number from 0 to 0.5, got {feather!r}")
    outputs = Outputs(
        Path(cfg.output_dir),
        overlays=cfg.overlays,
        cutouts=cfg.cutouts,
        background=parse_background(cfg.background),
        feather=float(feather),
        threshold=threshold,
    )
    if is_first_process():  # the other processes follow the first's checks
        check_output_dir(
            outputs.folder, Path(cfg.input), cfg.overwrite or cfg.resume, outputs.background
        )
        check_writable(outputs.folder, "output_dir")
        if cfg.overwrite:
            clear(outputs)
    settings = {
        "model": [str(m.path.resolve()) for m in models],
        "threshold": threshold,
        "size": [list(s) for s in predictor.sizes],
        "tta": cfg.tta,
        "tile": None if cfg.tile is None else list(cfg.tile),
        "tile_overlap": cfg.tile_overlap,
        "postprocess": dict(cfg.postprocess),
        "refine": predictor.refine.record(),  # None when off, as runs before it record nothing
        "cutouts": cfg.cutouts,
        "background": None if cfg.background is None else str(outputs.background),
        "cutout_feather": outputs.feather,
    }
    todo, todo_names = left_to_predict(paths, names, outputs, cfg.resume, settings)
    writer = MaskWriter(outputs, names)
    trainer = inference_trainer(trainer_cfg, writer, models)
    if todo:
        soft = outputs.feather > 0 and (outputs.cutouts or outputs.background is not None)
        module = InferenceModule(predictor, threshold, postprocess, probabilities=soft)
        inputs = PredictionSet(todo, predictor, todo_names)
        run_loop(trainer, module, inputs, cfg.batch_size, cfg.num_workers)
    elif trainer.is_global_zero:
        writer.result = merge(writer.outputs, writer.inputs)
    return writer.result, outputs, len(paths)
