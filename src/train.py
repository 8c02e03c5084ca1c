"""Train a U-Net on Carvana(-like) images: ``python src/train.py [overrides]``.

    python src/train.py                                  # synthetic default set, CPU, a few minutes
    python src/train.py data=carvana data.root=/data/carvana trainer.gpus=1
    python src/train.py -m model.net.base_width=8,16 data.batch_size=2,4
    python src/train.py resume=true                      # go on with the newest run

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

# a run a signal stopped (its checkpoints saved) ends as a process that signal ended would
SIGNAL_EXIT = {"SIGTERM": 128 + 15, "SIGINT": 128 + 2}


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
    when = ""
    if result.best_epoch is not None:
        when = f" (epoch {result.best_epoch}, step {result.best_step})"
    print(f"\nbest {result.monitor}: {score}{when}")
    print(f"checkpoint:    {result.best_checkpoint or 'none saved'}")
    print(f"last:          {result.last_checkpoint or 'none saved'}")
    print(f"stopped by:    {result.stopped_by or 'n/a'}")
    if result.log_dir:
        print(f"TensorBoard:   tensorboard --logdir {result.log_dir}")
    if result.stopped_by in SIGNAL_EXIT:
        print("go on with:    python src/train.py resume=true  (with this run's options)")
        raise SystemExit(SIGNAL_EXIT[result.stopped_by])
    # A sweeper (Optuna, ...) maximises what the task function returns.
    return result.best_score


if __name__ == "__main__":
    run(main)
