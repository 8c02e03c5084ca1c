"""Train a U-Net on Carvana(-like) images: ``python src/train.py [overrides]``.

    python src/train.py                                  # synthetic default set, CPU, a few minutes
    python src/train.py data=carvana data.root=/data/carvana trainer.gpus=1
    python src/train.py -m model.base_width=8,16 data.batch_size=2,4

The config lives in conf/ (``conf/train.yaml`` and its groups); the work in
``carseg.training.train``.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from carseg.runs.entrypoint import run, user_errors_exit
from carseg.training.callbacks.summary import record_failure
from carseg.training.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # One failed job must not end a sweep: Hydra keeps the exception as that job's result
        # (the Optuna sweeper records a failed trial and goes on), where SystemExit would stop it.
        try:
            result = train(cfg, multirun=True)
        except Exception as err:
            record_failure(cfg.paths.output_dir, err)  # the sweep's report shows why
            raise
    else:
        with user_errors_exit(cfg.paths.output_dir):
            result = train(cfg, multirun=False)
    if result.global_rank != 0:  # the other DDP processes stay quiet
        return result.best_score
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    epoch = "" if result.best_epoch is None else f" (epoch {result.best_epoch})"
    print(f"\nbest val/dice: {score}{epoch}")
    print(f"checkpoint:    {result.best_checkpoint or 'none saved'}")
    if result.log_dir:
        print(f"TensorBoard:   tensorboard --logdir {result.log_dir}")
    # A sweeper (Optuna, ...) maximises what the task function returns.
    return result.best_score


if __name__ == "__main__":
    run(main)
