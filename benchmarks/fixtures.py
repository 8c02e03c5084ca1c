"""What the benchmarks measure on: the data folder, the model's configuration, fixed batches,
a training step's FLOP count, and a bare Lightning fit.

One home for each, so that every benchmark file (CPU and GPU) builds the same model from
``conf/model/unet.yaml`` and reads the same data the same way.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from harness import REPO, progress

SAMPLE_DIR = Path(
    os.environ.get("CARSEG_SAMPLE_DIR", REPO.parent / "shared" / "carvana_sample")
).resolve()


def find_data(synthetic_cars: int, tmp: Path, override: str | None) -> tuple[Path, str]:
    """The folder of full-size pairs: ``--data``, the real sample, or a generated set."""
    if override:
        return Path(override).expanduser().resolve(), f"{override} (--data)"
    if (SAMPLE_DIR / "train").is_dir():
        return SAMPLE_DIR, f"real Carvana sample {SAMPLE_DIR}"
    from carseg.data.synthetic import generate_dataset

    progress(f"real sample not found at {SAMPLE_DIR}: generating {synthetic_cars} car(s)")
    root = generate_dataset(
        tmp / "synthetic", n_cars=synthetic_cars, height=1280, width=1918, seed=0
    )
    return root, f"generated: {synthetic_cars} synthetic car(s) x 16 views at 1918x1280"


# Trainer arguments of a timed fit: one epoch of training and nothing else (no logger,
# checkpoints, progress bar, model summary or sanity check), so that a fit is training steps.
BARE_FIT = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "max_epochs": 1,
    "num_sanity_val_steps": 0,
}


def quiet_lightning() -> None:
    """Silence Lightning's advice for real runs (workers, logging interval, no validation):
    a benchmark's fit is deliberately bare, and the lines would bury the progress output."""
    import logging
    import warnings

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")


def default_model_config(**overrides: Any) -> dict:
    """``conf/model/unet.yaml`` composed (its net, optimiser, schedule and loss nodes) as keyword
    arguments of ``SegmentationModule``, with overrides: a net's argument (``base_width=64``) goes
    to the net's node, the module's own (``channels_last=True``) to the module.

    The module has no defaults of its own (they live in the yaml only), so the benchmarks build
    every model from this, as a training run does.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import carseg.runs.config  # noqa: F401  (the resolvers conf/ uses)

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=unet"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("_target_", "_recursive_"):
        model.pop(key)
    unknown = set(overrides) - set(model) - set(model["net"])
    if unknown:
        raise ValueError(f"not keys of conf/model/unet.yaml or its net: {sorted(unknown)}")
    for key, value in overrides.items():
        (model["net"] if key in model["net"] else model)[key] = value
    return model


def default_augmentation() -> dict:
    """The training augmentations' ranges of ``conf/data/carvana.yaml``."""
    from omegaconf import OmegaConf

    data = OmegaConf.load(REPO / "conf" / "data" / "carvana.yaml")
    return OmegaConf.to_container(data.augmentation)


def fixed_batches(n: int, batch: int, size: tuple[int, int]) -> tuple[Any, Any]:
    """``n`` random batches (images ``(B, 3, H, W)``, masks ``(B, 1, H, W)`` in {0, 1})."""
    import torch

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n * batch, 3, *size, generator=gen)
    masks = (torch.rand(n * batch, 1, *size, generator=gen) > 0.5).float()
    return images, masks


def train_step_flops(model: Any, batch: int, size: tuple[int, int]) -> int:
    """FLOPs of one forward + backward (BCE on logits) of ``model`` on a batch of images.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls (BatchNorm,
    ReLU, pooling, upsampling and the optimiser are not counted). The count depends on shapes
    only, so it runs on a copy of the model on the meta device: no memory, no time, any machine.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).to("meta").train()
    channels = next(p for p in net.parameters() if p.dim() == 4).shape[1]  # the first conv's
    images = torch.empty(batch, channels, *size, device="meta")
    masks = torch.empty(batch, 1, *size, device="meta")
    with FlopCounterMode(display=False) as counter:
        F.binary_cross_entropy_with_logits(net(images), masks).backward()
    return counter.get_total_flops()
