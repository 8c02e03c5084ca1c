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
    "model.net.base_width=4",
    "trainer.max_epochs=2",
]


def run_script(
    root: Path, script: str, *overrides: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` as a user would, with runs landing in ``root/outputs``."""
    env = {**os.environ, "CARSEG_ROOT": str(root), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "src" / f"{script}.py"), *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_entry(root: Path, script: str, *overrides: str) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` as ``run_script`` does, but in this process: the same argv, folder
    and environment, a tenth of the time (no new interpreter importing torch and Lightning).

    An exception that escapes the entry point is returned as exit status 1 with its traceback in
    ``stderr``, as the interpreter would print it. The logging set-up Hydra changes is restored.
    """
    import contextlib
    import io
    import logging
    import runpy
    import traceback

    out, err = io.StringIO(), io.StringIO()
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    saved_argv, saved_cwd = sys.argv[:], os.getcwd()
    saved_env = {"CARSEG_ROOT": os.environ.get("CARSEG_ROOT")}
    os.environ.update(CARSEG_ROOT=str(root))
    sys.argv = [str(REPO / "src" / f"{script}.py"), *overrides]
    os.chdir(root)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 (what the interpreter would print, and exit 1)
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for handler in root_logger.handlers[:]:
            if handler not in handlers:
                root_logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root_logger.handlers:
                root_logger.addHandler(handler)
        root_logger.setLevel(level)
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


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


def kill_at_epoch(epoch: int):
    """A Lightning callback that kills its own process (SIGKILL) when ``epoch`` starts, as an
    out-of-memory killer or a lost node would: nothing gets to write that it ended."""
    import signal

    import pytorch_lightning as pl

    class Killer(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    return Killer()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def quiet_trainer(max_epochs: int, **options):
    """A CPU Lightning Trainer without logger, progress bar or model summary, for unit tests."""
    import pytorch_lightning as pl

    defaults = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}  # fmt: skip
    return pl.Trainer(max_epochs=max_epochs, **{**defaults, **options})


def augmentation(**changes):
    """The training augmentations' ranges of ``conf/data/carvana.yaml``, with ``changes``."""
    from omegaconf import OmegaConf

    ranges = OmegaConf.to_container(compose("data=carvana").data.augmentation, resolve=True)
    return {**ranges, **changes}


def predictor(model, size, tta: bool = False, tile=None, tile_overlap: int = 64):
    """A ``Predictor`` of one model at ``size``."""
    from carseg.inference.predictor import Predictor

    return Predictor(models=[model], sizes=[size], tta=tta, tile=tile, tile_overlap=tile_overlap)


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
