"""Score a checkpoint at Kaggle's resolution: ``python src/eval.py ckpt_path=... [data=...]``.

The work is in ``carseg.evaluation``; the config in ``conf/eval.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CARSEG_ROOT", str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from carseg.cli import require, user_errors_exit  # noqa: E402
from carseg.data import CarvanaDataset  # noqa: E402
from carseg.evaluation import score_images, write_report  # noqa: E402
from carseg.inference import Predictor, input_size, load_checkpoint, torch_forward  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with user_errors_exit():
        require(cfg, "ckpt_path", "the checkpoint to evaluate, e.g. ckpt_path=outputs/train/...")
        model, info = load_checkpoint(cfg.ckpt_path, cfg.device)
        size = input_size(info.size, cfg.size)
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()
        datamodule.setup("validate")
        ids = datamodule.val_set.ids if cfg.split == "val" else None
        dataset = CarvanaDataset(datamodule.root, ids, image_dir=datamodule.image_dir)
        predictor = Predictor(torch_forward(model, cfg.device), size, tta=cfg.tta)
        threshold = info.threshold if cfg.threshold is None else cfg.threshold
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
                "tta": cfg.tta,
                "model_input_size": list(size),
            },
        )
    print(
        f"\nDice at full resolution over {len(scores)} images: mean {report.mean:.4f}, "
        f"median {report.median:.4f}, min {report.minimum:.4f}"
    )
    for name, path in report.files.items():
        print(f"{name + ':':11}{path}")
    return report.mean


if __name__ == "__main__":
    main()
