"""Score a checkpoint at Kaggle's resolution: ``python src/eval.py ckpt_path=... [data=...]``.

Scores the cars the checkpoint held out for validation (``split=val``). The work is in
``carseg.inference.evaluate``; the config in ``conf/eval.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from carseg.training.checkpoint_io import load_model
from carseg.utils.checks import check_choice, check_device, check_int, check_threshold
from carseg.runs.entrypoint import require, run, user_errors_exit
from carseg.data.dataset import CarvanaDataset
from carseg.inference.evaluate import SPLITS, images_to_score, score_images, write_report
from carseg.inference.predictor import Predictor, input_size, torch_forward
from carseg.data.split import cars_of, split_by_car


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with user_errors_exit(cfg.paths.output_dir):
        require(cfg, "ckpt_path", "the checkpoint to evaluate, e.g. ckpt_path=outputs/train/...")
        check_choice("split", cfg.split, SPLITS)
        check_int("batch_size", cfg.batch_size, 1)
        device = check_device("device", cfg.device)
        model, info = load_model(cfg.ckpt_path, device)
        size = input_size(info.size, cfg.size)
        threshold = (
            info.threshold if cfg.threshold is None else check_threshold("threshold", cfg.threshold)
        )
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()
        everything = CarvanaDataset(datamodule.root, image_dir=datamodule.image_dir)
        own_val = split_by_car(everything.ids, datamodule.val_fraction, datamodule.split_seed)[1]
        ids = images_to_score(everything.ids, cfg.split, info.split, cars_of(own_val))
        dataset = CarvanaDataset(datamodule.root, ids, image_dir=datamodule.image_dir)
        predictor = Predictor(
            torch_forward(model, device), size, cfg.tta, cfg.tile, cfg.tile_overlap
        )
        scores = score_images(dataset, predictor, threshold, cfg.batch_size)
        report = write_report(
            Path(cfg.paths.output_dir),
            scores,
            dataset,
            predictor,
            threshold,
            cfg.worst,
            extra={
                "checkpoint": str(cfg.ckpt_path),
                "data_root": str(datamodule.root),
                "split": cfg.split,
                "cars": cars_of(ids),
                "tta": cfg.tta,
                "model_input_size": list(size),
            },
        )
    print(
        f"\nDice at full resolution over {len(scores)} images of {len(cars_of(ids))} cars: mean "
        f"{report.mean:.4f}, median {report.median:.4f}, min {report.minimum:.4f}"
    )
    for name, path in report.files.items():
        print(f"{name + ':':11}{path}")
    return report.mean


if __name__ == "__main__":
    run(main)
