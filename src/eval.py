"""Score trained models at Kaggle's resolution: ``python src/eval.py ckpt_path=... [data=...]``.

Scores the cars the checkpoint held out for validation (``split=val``), through the same predict
loop as ``predict.py``: ``trainer.devices=2`` for two processes, ``onnx_path=`` for an exported
model, ``ckpt_path=[a,b,c]`` for an ensemble. The work is in ``carseg.inference.evaluate``; the
config in ``conf/eval.yaml`` and ``conf/inference/``.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from carseg.inference.evaluate import evaluate
from carseg.runs.entrypoint import run, user_errors_exit


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    with user_errors_exit(cfg.paths.output_dir):
        report = evaluate(cfg, HydraConfig.get().overrides.task)
    if report is None:  # not the first process: it has scored its share
        return None
    n_cars = len({*report.by_car})
    print(
        f"\nDice at full resolution over {len(report.scores)} images of {n_cars} cars: mean "
        f"{report.mean:.4f}, median {report.median:.4f}, min {report.minimum:.4f}"
    )
    if report.ceiling is not None:
        print(
            f"size's ceiling (true masks down to the model's size and back): {report.ceiling:.4f}"
        )
    if report.by_view:
        views = sorted(report.by_view.items(), key=lambda kv: kv[1])[:3]
        print("worst views: " + ", ".join(f"{v} {d:.4f}" for v, d in views))
    for name, path in report.files.items():
        print(f"{name + ':':11}{path}")
    return report.mean


if __name__ == "__main__":
    run(main)
