"""carseg.models.registry: a ``_target_`` is looked up, never imported, unless the command's own
config names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from carseg.models.registry import LOSSES, NETS, Registry, trusting
from carseg.models.unet import UNet
from carseg.training.optim import OPTIMIZERS, SCHEDULERS
from carseg.utils.errors import ConfigError


def test_registered_classes_and_allowed_namespaces_are_found():
    assert NETS.lookup("carseg.models.unet.UNet") is UNet
    assert OPTIMIZERS.lookup("torch.optim.AdamW") is torch.optim.AdamW
    assert SCHEDULERS.lookup("torch.optim.lr_scheduler.OneCycleLR") is (
        torch.optim.lr_scheduler.OneCycleLR
    )
    assert "carseg.models.losses.BoundaryBCEDice" in LOSSES.names()


@pytest.mark.parametrize(
    ("registry", "target"),
    [
        (NETS, "os.system"),
        (NETS, "subprocess.Popen"),
        (NETS, "torch.optim.Adam"),  # a class, but not one of the registry's
        (OPTIMIZERS, "torch.optim.Optimizer.__init__"),
        (OPTIMIZERS, "torch.optim.lr_scheduler.StepLR"),  # a schedule is not an optimiser
        (SCHEDULERS, "torch.optim.lr_scheduler._LRScheduler_not_there"),
        (LOSSES, "builtins.eval"),
        (NETS, ""),
    ],
)
def test_anything_else_is_refused_by_name_without_importing_it(registry, target, monkeypatch):
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name, *a: imported.append(name))
    with pytest.raises(ConfigError, match="not one carseg builds|has no _target_"):
        registry.lookup(target)
    assert imported == []


def test_a_class_the_command_names_is_built_inside_the_block_only(tmp_path):
    target = "torch.nn.Identity"
    with pytest.raises(ConfigError, match="trusted_targets"):
        NETS.lookup(target)
    with trusting(target):
        assert NETS.build({"_target_": target}).__class__ is torch.nn.Identity
    with pytest.raises(ConfigError):
        NETS.lookup(target)
    with pytest.raises(ConfigError, match="cannot be imported"), trusting("no_such.module.Net"):
        pass


def test_a_node_with_keys_its_class_does_not_take_is_refused():
    node = {"_target_": "carseg.models.unet.UNet", "in_channels": 3, "base_width": 4,
            "depth": 2, "bilinear": True, "batch_norm": True, "dropout": 0.5}  # fmt: skip
    with pytest.raises(ConfigError, match="takes no argument dropout"):
        NETS.build(node)
    registry = Registry("thing", [Path])
    assert registry.build({"_target_": "pathlib.Path"}, "a") == Path("a")
