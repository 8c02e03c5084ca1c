"""The one way carseg runs a trained model over images: Lightning's predict loop.

``Trainer.predict`` splits the inputs across processes (``trainer.devices``, ``trainer.num_nodes``;
each input to exactly one). Loader workers read the images and prepare them for every model size
(and, to score, read the true masks); ``InferenceModule.predict_step`` runs the ``Predictor`` on
the device, where the probabilities are resized back to each photo's size and thresholded (and
scored). What becomes of each batch is a writer callback's job: masks and a submission
(``carseg.inference.mask_writer``) or scores and a report (``carseg.inference.evaluate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from carseg.data.dataset import CarvanaDataset
from carseg.data.image_io import read_image
from carseg.inference.loading import OnnxNet, TrainedModel, load_models
from carseg.inference.postprocess import PostProcess
from carseg.inference.predictor import Predictor, size_ceiling_dice
from carseg.inference.refine import Refine, grey_guide
from carseg.models.metrics import dice_per_image
from carseg.models.registry import trusted_targets, trusting
from carseg.training.trainer import build_trainer, resolve_trainer_config
from carseg.utils.checks import check_int, check_size, check_threshold
from carseg.utils.errors import ConfigError, DataError, UnreadableFileError
from carseg.utils.processes import loader_workers


class PredictionSet(Dataset):
    """Image files, read and prepared for the models in the loader workers.

    Items are dicts: ``name`` (the file name, or its path below the input folder), ``path``,
    ``size`` (the photo's height and width)
    and ``inputs`` (one tensor per model size), plus ``guide`` (the grey photo) where the
    predictor's guided filter is on; or ``name``, ``path`` and ``error`` for an input that cannot
    be read.
    """

    def __init__(
        self, paths: Sequence[Path], predictor: Predictor, names: Sequence[str] | None = None
    ) -> None:
        self.paths = list(paths)
        self.names = list(names) if names is not None else [p.name for p in self.paths]
        self.prepare = predictor.prepare  # (picklable: no models)
        self.guided = predictor.refine.guided

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, name: str, path: Path) -> dict[str, Any]:
        try:
            image, size = read_image(path)
        except UnreadableFileError as err:
            return {"name": name, "path": path, "error": err.reason}
        inputs = {key: prepare(image) for key, prepare in self.prepare.items()}
        item = {"name": name, "path": path, "size": size, "inputs": inputs}
        if self.guided:
            item["guide"] = grey_guide(image)
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(self.names[index], self.paths[index])


class ScoringSet(PredictionSet):
    """The images of a Carvana data set with their true masks, to score: items as
    ``PredictionSet``'s, named by image id, plus ``truth`` (uint8 ``(H, W)``) and ``ceiling``: the
    Dice of the true mask taken down to ``ceiling_size`` and back up as predictions are
    (``size_ceiling_dice``), when a size is given."""

    def __init__(
        self,
        dataset: CarvanaDataset,
        predictor: Predictor,
        ceiling_size: Sequence[int] | None,
        threshold: float,
    ) -> None:
        super().__init__([dataset.image_paths[i] for i in dataset.ids], predictor)
        self.dataset = dataset
        self.ceiling_size = tuple(ceiling_size) if ceiling_size else None
        self.threshold = threshold

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.dataset.ids[index]
        item = self.item(image_id, self.paths[index])
        if "error" not in item:
            try:
                truth = self.dataset.load_mask(image_id, item["size"])
            except UnreadableFileError as err:
                reason = f"its mask {Path(err.path).name} {err.reason}"
                return {"name": image_id, "path": self.paths[index], "error": reason}
            if truth.shape != tuple(item["size"]):
                h, w = item["size"]
                raise DataError(
                    f"The mask of {image_id} is {truth.shape[1]}x{truth.shape[0]} but its image "
                    f"is {w}x{h}: each mask must match its image's size"
                )
            item["truth"] = torch.from_numpy(truth)
            if self.ceiling_size is not None:
                item["ceiling"] = size_ceiling_dice(truth, self.ceiling_size, self.threshold)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: the readable items' inputs stacked per model size, the others listed as
    failures."""
    good = [i for i in items if "error" not in i]
    batch: dict[str, Any] = {
        "inputs": (
            {k: torch.stack([i["inputs"][k] for i in good]) for k in good[0]["inputs"]}
            if good
            else None
        ),
        "names": [i["name"] for i in good],
        "paths": [i["path"] for i in good],
        "sizes": [tuple(i["size"]) for i in good],
        "failed": [(i["name"], i["error"]) for i in items if "error" in i],
    }
    if good and "guide" in good[0]:
        batch["guides"] = [i["guide"] for i in good]
    if good and "truth" in good[0]:
        batch["truth"] = [i["truth"] for i in good]
        batch["ceiling"] = [i.get("ceiling") for i in good]
    return batch


class InferenceModule(pl.LightningModule):
    """Masks (and, with true masks in the batch, Dice) at each photo's own size.

    Args:
        predictor: the models, their sizes, TTA and tiles (moved to the device by Lightning).
        threshold: probability above which a pixel is car.
        postprocess: what is done to each mask after the threshold (on the CPU).
        probabilities: also return each photo's probabilities, as uint8 0-255 (soft cut-outs).
    """

    def __init__(
        self,
        predictor: Predictor,
        threshold: float,
        postprocess: PostProcess,
        probabilities: bool = False,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.threshold = check_threshold("threshold", threshold)
        self.postprocess = postprocess
        self.probabilities = probabilities

    def setup(self, stage: str) -> None:
        for model in self.predictor.models:  # in the layout each model runs fastest in there
            if hasattr(model, "place_on"):
                model.place_on(self.trainer.strategy.root_device)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = {**batch, "masks": [], "dice": []}
        if batch["inputs"] is None:
            return out
        probs = self.predictor(batch["inputs"], batch["sizes"], batch.get("guides"))
        masks = [
            self.postprocess((p > self.threshold).to(torch.uint8).cpu().numpy()) for p in probs
        ]
        if "truth" in batch:
            out["dice"] = [
                float(dice_per_image(torch.from_numpy(m)[None], t.cpu()[None])[0])
                for m, t in zip(masks, batch["truth"], strict=True)
            ]
        out["masks"] = masks
        if self.probabilities:
            out["probabilities"] = [(p * 255).round().to(torch.uint8).cpu().numpy() for p in probs]
        return out


def postprocess_of(cfg: DictConfig | Mapping[str, Any]) -> PostProcess:
    """The ``postprocess`` options of an eval or predict config.

    Raises:
        ConfigError: ``postprocess`` is not the group of switches (``postprocess=null``).
    """
    if not isinstance(cfg.get("postprocess"), Mapping):
        raise ConfigError(
            f"postprocess={cfg.get('postprocess')!r}: postprocess is a group of switches; turn "
            "them off with postprocess.largest_component=false postprocess.fill_holes=false "
            "(the default), or on one by one"
        )
    return PostProcess(
        largest_component=cfg.postprocess.largest_component,
        fill_holes=cfg.postprocess.fill_holes,
    )


def build_predictor(cfg: DictConfig | Mapping[str, Any]) -> tuple[Predictor, float, list]:
    """The ``Predictor`` and threshold of an eval or predict config (``conf/inference``), and the
    models it loaded (``TrainedModel``).

    Raises:
        ConfigError: a bad option, no model, or a model size that is not recorded nor given.
    """
    check_int("batch_size", cfg.batch_size, 1)
    # classes outside carseg that the command's own config allows a checkpoint to name
    with trusting(*trusted_targets(cfg.trusted_targets)):
        models = load_models(cfg.ckpt_path, cfg.onnx_path)
    sizes = [model_size(m, cfg.size) for m in models]
    if cfg.threshold is not None:
        threshold = check_threshold("threshold", cfg.threshold)
    else:  # an ensemble's models were trained at the same threshold, or the mean of theirs
        threshold = float(np.mean([m.threshold for m in models]))
    predictor = Predictor(
        models=[m.net for m in models],
        sizes=sizes,
        tta=cfg.tta,
        tile=cfg.tile,
        tile_overlap=cfg.tile_overlap,
        refine=Refine.of(cfg.get("refine"), [m.refine for m in models]),
    )
    return predictor, threshold, models


def model_size(model: TrainedModel, override: Sequence[int] | None) -> tuple[int, int]:
    """The size to feed ``model``: ``override`` if given, else the one its file recorded.

    A model fed another size than it was trained at loses most of its Dice, so there is no guess.
    """
    if override:
        return check_size("size", list(override))
    if not model.size:
        raise ConfigError(
            f"{model.path} does not record the image size it was trained at: give it as "
            "size=[height,width]"
        )
    return check_size("size", list(model.size))


def inference_trainer_config(cfg: DictConfig) -> dict[str, Any]:
    """The config's ``trainer`` group for the predict loop, checked (the devices asked for exist):
    no logger, no checkpoints."""
    trainer_cfg = resolve_trainer_config(OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer_cfg.update(logger=False, enable_checkpointing=False, enable_model_summary=False)
    return trainer_cfg


def inference_trainer(
    trainer_cfg: Mapping[str, Any], writer: pl.Callback, models: Sequence[TrainedModel]
) -> pl.Trainer:
    """The Trainer of ``inference_trainer_config`` with ``writer``; on the CPU for ONNX models
    (ONNX Runtime's CPU provider)."""
    trainer_cfg = dict(trainer_cfg)
    if any(isinstance(m.net, OnnxNet) for m in models):
        trainer_cfg["accelerator"] = "cpu"
    return build_trainer(trainer_cfg, callbacks=[writer])


def run_loop(
    trainer: pl.Trainer,
    module: InferenceModule,
    dataset: Dataset,
    batch_size: int,
    num_workers: int | str,
) -> None:
    """Run ``module`` over ``dataset`` with ``trainer`` (whose callbacks hold the writer)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=loader_workers(num_workers, trainer.num_devices),
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )
    trainer.predict(module, dataloaders=loader, return_predictions=False)
