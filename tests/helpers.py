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


def compose(*overrides: str, config: str = "train"):
    """The config ``src/<config>.py`` would run with ``overrides``, composed from conf/."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import carseg.cli  # noqa: F401  (registers the project-root resolver that conf/paths uses)

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config, overrides=list(overrides))


def _dotted(group: str, options: dict) -> list[str]:
    return [f"{group}.{key}={_hydra_value(value)}" for key, value in options.items()]


def _hydra_value(value) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return str(value)


def build_model(model: str = "unet", **options):
    """A ``SegmentationModule`` from ``conf/model/<model>.yaml`` with ``options`` changed."""
    from hydra.utils import instantiate

    cfg = compose(f"model={model}", *_dotted("model", options))
    return instantiate(cfg.model, _convert_="all")


def build_datamodule(root, data: str = "carvana", **options):
    """A ``CarvanaDataModule`` over ``root`` from ``conf/data/<data>.yaml`` with ``options``."""
    from hydra.utils import instantiate

    cfg = compose(f"data={data}", f"data.root={root}", *_dotted("data", options))
    return instantiate(cfg.data, _convert_="all")


def build_callback(name: str, **options):
    """The callback ``name`` of ``conf/callbacks/default.yaml`` with ``options`` changed."""
    from hydra.utils import instantiate

    cfg = compose(*_dotted(f"callbacks.{name}", options))
    return instantiate(cfg.callbacks[name], _convert_="all")
