"""conf/ is the single source of the settings: every default lives in one place and every key is
read by something."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import REPO

CONF = REPO / "conf"
SOURCES = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.py"))  # paths.* keys
CONFIG_TEXT = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))


def _our_targets() -> list[tuple[Path, str, dict]]:
    """(file, key path, node) of every node in conf/ that builds one of carseg's classes."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        stack = [("", content)]
        while stack:
            where, node = stack.pop()
            if isinstance(node, dict):
                if str(node.get("_target_", "")).startswith("carseg."):
                    found.append((path, where, node))
                stack += [(f"{where}.{k}".lstrip("."), v) for k, v in node.items()]
    return found


def _target(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("path", "where", "node"),
    _our_targets(),
    ids=lambda x: str(x.relative_to(CONF)) if isinstance(x, Path) else None,
)
def test_a_key_set_in_conf_has_no_second_default_in_python(path, where, node):
    params = inspect.signature(_target(node["_target_"])).parameters
    for key in node:
        if key in ("_target_", "defaults"):
            continue
        assert key in params, f"{path}: {where}.{key} is not an argument of {node['_target_']}"
        assert params[key].default is inspect.Parameter.empty, (
            f"{node['_target_']}({key}=...) has a default in Python and in {path.name}: "
            "keep one (conf/)"
        )


def test_the_targets_are_found():
    targets = {node["_target_"] for _, _, node in _our_targets()}
    assert {
        "carseg.data.datamodule.CarvanaDataModule",
        "carseg.training.segmentation_module.SegmentationModule",
        "carseg.training.callbacks.RunSummary",
    } <= targets


# Where each entry config's keys are read: the entry point, and the library function it hands
# the whole config to.
READERS = {
    "train": ["src/train.py", "src/carseg/training/train.py"],
    "eval": ["src/eval.py"],
    "predict": ["src/predict.py"],
    "export": ["src/export.py"],
}


@pytest.mark.parametrize("name", READERS)
def test_every_top_level_key_of_an_entry_config_is_read(name):
    content = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=False)
    readers = "\n".join((REPO / path).read_text() for path in READERS[name])
    for key in content:
        if key == "defaults":
            continue
        read = re.search(rf"cfg\.{key}\b|cfg\.get\(\"{key}\"|config\.get\(\"{key}\"", readers)
        interpolated = "${" + key + "}" in CONFIG_TEXT or "${" + key + "." in CONFIG_TEXT
        assert read or interpolated, f"conf/{name}.yaml: nothing reads {key!r}"


def test_every_path_key_is_used():
    content = OmegaConf.to_container(OmegaConf.load(CONF / "paths" / "default.yaml"))
    for key in content:
        assert f"paths.{key}" in SOURCES + CONFIG_TEXT.replace(f"{key}:", "")
