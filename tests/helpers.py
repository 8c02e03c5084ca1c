"""Helpers the end-to-end tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# A set of 3 small generated cars and a tiny U-Net: the whole pipeline in seconds.
TINY_TRAIN = [
    "data.synthetic.n_cars=3",
    "data.synthetic.height=64",
    "data.synthetic.width=96",
    "data.size=[32,48]",
    "data.num_workers=0",
    "model=unet_small",
    "model.base_width=4",
    "trainer.max_epochs=2",
]


def run_script(
    root: Path, script: str, *overrides: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` as a user would, with runs landing in ``root/outputs``."""
    env = {**os.environ, "CARSEG_ROOT": str(root), "NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "src" / f"{script}.py"), *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def poison_batch_callback(epoch: int, batch: int = 0):
    """A Lightning callback that fills one training batch with NaN, as a broken step would."""
    import pytorch_lightning as pl

    class PoisonBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, data, batch_idx):
            if trainer.current_epoch == epoch and batch_idx == batch:
                data[0].fill_(float("nan"))

    return PoisonBatch()


def rank_metrics_callback(folder: str):
    """A Lightning callback that writes each process's final metrics to ``rank<N>.json``."""
    import json

    import pytorch_lightning as pl

    class DumpRankMetrics(pl.Callback):
        def on_fit_end(self, trainer, pl_module):
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            record = {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "metrics": metrics,
                "val_images_seen": len(trainer.val_dataloaders.sampler),
            }
            path = Path(folder) / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps(record))

    return DumpRankMetrics()
