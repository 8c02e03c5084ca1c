"""The configs of conf/, composed as the entry points compose them, and the objects they build."""

from __future__ import annotations

import re
from pathlib import Path

from support.entry import REPO, TINY_TRAIN


def compose(*overrides: str, config: str = "train"):
    """The config ``src/<config>.py`` would run with ``overrides``, composed from conf/."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import carseg.runs.config  # noqa: F401  (registers the resolvers conf/ uses)

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
    if isinstance(value, str) and not re.fullmatch(r"[\w./-]*", value):
        return "'" + value.replace("'", "\\'") + "'"  # quoted: Hydra's grammar has ( ) [ ] ...
    return str(value)


def instantiate(node):
    """Hydra's ``instantiate`` as the entry points call it, raising our own error unwrapped."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from carseg.utils.errors import CarsegError

    try:
        return hydra_instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, CarsegError):
            raise err.__cause__ from None
        raise


# build_model's keyword arguments that belong to one of the model's nodes
NET_KEYS = ("in_channels", "base_width", "depth", "bilinear", "batch_norm")


OPTIMIZER_KEYS = ("lr", "weight_decay")


GROUPS = ("net", "optimizer", "scheduler", "loss")  # chosen by name: loss="bce_dice"


def build_model(model: str = "unet", **options):
    """A ``SegmentationModule`` from ``conf/model/<model>.yaml`` with ``options`` changed.

    ``net=``, ``optimizer=``, ``scheduler=`` and ``loss=`` choose a file of that group; the net's
    and the optimiser's arguments (``base_width=4``, ``lr=1e-3``) and ``dice_weight`` go to their
    node; the rest to the module (``threshold=0.9``).
    """
    overrides = [f"model={model}"]
    for key, value in options.items():
        if key in GROUPS:
            overrides.append(f"model/{key}={value}")
        elif key in NET_KEYS:
            overrides += _dotted("model.net", {key: value})
        elif key in OPTIMIZER_KEYS:
            overrides += _dotted("model.optimizer", {key: value})
        elif key == "dice_weight":
            overrides += _dotted("model.loss", {key: value})
        else:
            overrides += _dotted("model", {key: value})
    return instantiate(compose(*overrides).model)


def build_datamodule(root, data: str = "carvana", **options):
    """A ``CarvanaDataModule`` over ``root`` from ``conf/data/<data>.yaml`` with ``options``."""
    return instantiate(compose(f"data={data}", f"data.root={root}", *_dotted("data", options)).data)


def build_callback(name: str, **options):
    """The callback ``name`` of ``conf/callbacks/default.yaml`` with ``options`` changed."""
    return instantiate(compose(*_dotted(f"callbacks.{name}", options)).callbacks[name])


def compose_train(tmp_path: Path, *overrides: str):
    """``conf/train.yaml`` on the tiny set, its run in ``tmp_path/run``, no logger or progress
    bar, open to new keys (a test adds callbacks)."""
    from omegaconf import OmegaConf

    cfg = compose(
        *TINY_TRAIN,
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        "logger=none",
        "callbacks.progress_bar=null",
        *overrides,
    )
    OmegaConf.set_struct(cfg, False)
    return cfg


def augmentation(**changes):
    """The training augmentations' ranges of ``conf/data/carvana.yaml``, with ``changes``."""
    from omegaconf import OmegaConf

    ranges = OmegaConf.to_container(compose("data=carvana").data.augmentation, resolve=True)
    return {**ranges, **changes}


def predictor(model, size, tta: bool = False, tile=None, tile_overlap: int = 64):
    """A ``Predictor`` of one model at ``size``."""
    from carseg.inference.predictor import Predictor

    return Predictor(models=[model], sizes=[size], tta=tta, tile=tile, tile_overlap=tile_overlap)
