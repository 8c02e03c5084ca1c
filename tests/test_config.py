"""conf/ is the single source of the settings: every default lives in one place, every key is
read by something, and the decisions declared once (the monitored metric) are referenced."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import carseg
from support.configs import compose
from support.entry import REPO, TINY_TRAIN, run_entry

CONF = REPO / "conf"
SOURCES = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.py"))  # paths.* keys
CONFIG_TEXT = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))


def _nodes():
    """(file, key path, node) of every mapping in conf/."""
    for path in sorted(CONF.rglob("*.yaml")):
        content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        stack = [("", content)]
        while stack:
            where, node = stack.pop()
            if isinstance(node, dict):
                yield path, where, node
                stack += [(f"{where}.{k}".lstrip("."), v) for k, v in node.items()]


def _our_targets() -> list[tuple[Path, str, dict]]:
    """(file, key path, node) of every node in conf/ that builds one of carseg's classes."""
    return [n for n in _nodes() if str(n[2].get("_target_", "")).startswith("carseg.")]


def _target(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("path", "where", "node"),
    _our_targets(),
    ids=lambda x: str(x.relative_to(CONF)) if isinstance(x, Path) else None,
)
def test_a_key_set_in_conf_is_an_argument_without_a_python_default(path, where, node):
    params = inspect.signature(_target(node["_target_"])).parameters
    for key in node:
        if key == "defaults" or (key.startswith("_") and key.endswith("_")):
            continue
        if key in ("interval", "frequency", "monitor") and "scheduler" in str(path):
            continue  # Lightning's keys for when to step a schedule (carseg.training.optim)
        assert key in params, f"{path}: {where}.{key} is not an argument of {node['_target_']}"
        assert params[key].default is inspect.Parameter.empty, (
            f"{node['_target_']}({key}=...) has a default in Python and in {path.name}: "
            "keep one (conf/)"
        )


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def _yaml_values() -> dict[str, list[tuple[Path, object]]]:
    """Every leaf of conf/ by its key: ``{"tile_overlap": [(inference/default.yaml, 64)]}``."""
    found: dict[str, list[tuple[Path, object]]] = {}
    for path, _, node in _nodes():
        for key, value in node.items():
            if not isinstance(value, dict) and not (isinstance(value, str) and "${" in value):
                found.setdefault(str(key), []).append((path, _plain(value)))
    return found


def _callables():
    """Every function, method and class of the carseg package, with where it is defined."""
    for info in pkgutil.walk_packages(carseg.__path__, "carseg."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module):
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{obj.__name__}", obj
            elif inspect.isclass(obj):
                for name, member in vars(obj).items():
                    if inspect.isfunction(member):
                        yield f"{module.__name__}.{obj.__qualname__}.{name}", member


def test_no_python_default_anywhere_in_the_package_repeats_a_yaml_value():
    """A parameter named like a conf/ key must not default to that key's value: there would be
    two places to change it, and one of them would be forgotten."""
    values = _yaml_values()
    repeats = []
    for name, func in _callables():
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            continue
        for param in params:
            if param.default is inspect.Parameter.empty or param.name not in values:
                continue
            for path, value in values[param.name]:
                default = _plain(param.default)
                if type(default) is type(value) and default == value:
                    where = path.relative_to(CONF)
                    repeats.append(f"{name}({param.name}={default!r}) repeats conf/{where}")
    assert not repeats, "\n".join(repeats)


def test_the_scan_above_finds_a_repeated_default():
    """(The check can fail: a default equal to conf/inference's tile_overlap is caught.)"""
    values = _yaml_values()
    assert (CONF / "inference" / "default.yaml", 64) in values["tile_overlap"]
    assert (CONF / "data" / "carvana.yaml", 0.75) in values["crop_on_car"]


def test_the_targets_are_found():
    targets = {node["_target_"] for _, _, node in _our_targets()}
    assert {
        "carseg.data.datamodule.CarvanaDataModule",
        "carseg.training.segmentation_module.SegmentationModule",
        "carseg.training.callbacks.RunSummary",
        "carseg.models.unet.UNet",
        "carseg.models.losses.BoundaryBCEDice",
    } <= targets


def test_the_monitored_metric_is_declared_once_and_referenced():
    """val/dice and its direction are written in conf/train.yaml only; every callback, the
    plateau schedule and the best-score tracker take them from there."""
    declared = [
        p for p in CONF.rglob("*.yaml") if re.search(r"^\s*metric: val/dice", p.read_text(), re.M)
    ]
    assert declared == [CONF / "train.yaml"]
    others = [p.name for p in CONF.rglob("*.yaml") if p != CONF / "train.yaml"]
    for path in CONF.rglob("*.yaml"):
        if path != CONF / "train.yaml":
            assert not re.search(r"^\s*(monitor|mode): (val/dice|max)$", path.read_text(), re.M), (
                path
            )
    cfg = compose("monitor.metric=val/loss", "monitor.mode=min", "model/scheduler=plateau")
    callbacks = cfg.callbacks
    assert callbacks.model_checkpoint.monitor == callbacks.early_stopping.monitor == "val/loss"
    assert callbacks.model_checkpoint.mode == callbacks.hparams.mode == "min"
    assert callbacks.run_summary.monitor == "val/loss"
    filename = callbacks.model_checkpoint.filename
    assert filename == "epoch_{epoch:03d}-step_{step:06d}-loss_{val/loss:.4f}"
    assert (cfg.model.scheduler.monitor, cfg.model.scheduler.mode) == ("val/loss", "min")
    assert others  # (there are other files to search)


def test_one_augmentation_range_and_the_eval_batch_size_live_in_one_place_each():
    rotated = compose("data=carvana", "data.augmentation.affine.rotate=[-10,10]")
    assert list(rotated.data.augmentation.affine.rotate) == [-10, 10]
    for name in ("eval", "predict"):
        assert compose(config=name).batch_size == 4
        assert compose("batch_size=8", config=name).batch_size == 8
    assert "batch_size:" not in (CONF / "eval.yaml").read_text()
    assert "batch_size:" not in (CONF / "predict.yaml").read_text()


@pytest.fixture
def keys_read(monkeypatch):
    """Run an entry point in this process and return every config key its job read (from the
    moment Hydra hands it the config): an OmegaConf read, recorded by its full dotted key."""
    from omegaconf import DictConfig

    from carseg.runs.run_folder import RunFolderGuard

    recorded: set[str] = set()
    job = {"running": False}
    get_node, on_job_start = DictConfig._get_node, RunFolderGuard.on_job_start

    def spy(self, key, *args, **kwargs):
        if job["running"] and isinstance(key, str):
            job["running"] = False  # (naming the key reads the nodes above it)
            try:
                recorded.add(self._get_full_key(key))
            finally:
                job["running"] = True
        return get_node(self, key, *args, **kwargs)

    def started(self, config, **kwargs):
        on_job_start(self, config, **kwargs)
        job["running"] = True

    monkeypatch.setattr(DictConfig, "_get_node", spy)
    monkeypatch.setattr(RunFolderGuard, "on_job_start", started)

    def run(root: Path, script: str, *args: str) -> set[str]:
        recorded.clear()
        job["running"] = False
        proc = run_entry(root, script, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return set(recorded)

    return run


def _unread(config: str, read: set[str]) -> list[str]:
    """Top-level keys of ``config`` (and the paths group's) that nothing read: neither the job
    nor an interpolation in conf/."""
    cfg = compose(config=config)
    keys = [k for k in cfg if k != "hydra"] + [f"paths.{k}" for k in cfg.paths]
    interpolated = {
        k for k in keys if "${" + k + "}" in CONFIG_TEXT or "${" + k + "." in CONFIG_TEXT
    }
    return [k for k in keys if k not in interpolated and not any(
        r == k or r.startswith(k + ".") for r in read
    )]  # fmt: skip


@pytest.mark.slow
def test_every_top_level_key_of_an_entry_config_is_read(keys_read, trained, tmp_path):
    """Each entry point, run once: every key of its config reaches the code, or a file of conf/
    interpolates it. A key no run reads would be a setting that does nothing."""
    root, ckpt, data = trained
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"an earlier export")
    runs = {
        "train": keys_read(tmp_path, "train", *TINY_TRAIN, "trainer.max_epochs=1"),
        "eval": keys_read(root, "eval", f"ckpt_path={ckpt}", *TINY_TRAIN[:3]),
        "predict": keys_read(root, "predict", f"ckpt_path={ckpt}", f"input={data / 'train'}"),
        # (over an existing file: overwrite is read when there is something to overwrite)
        "export": keys_read(
            root, "export", f"ckpt_path={ckpt}", f"output={existing}", "overwrite=true"
        ),  # fmt: skip
    }
    for config, read in runs.items():
        assert "batch_size" in read or config in ("train", "export")  # (the recorder works)
        assert not _unread(config, read), (
            f"conf/{config}.yaml: nothing reads {_unread(config, read)}"
        )
    assert _unread("eval", set())  # (and can fail: with nothing read, keys are listed)
