"""carseg.models.registry: a ``_target_`` is looked up, never imported, unless the command's own
config names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from carseg.models.registry import LOSSES, NETS, Registry, trusted_targets, trusting
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


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "os.path.join"])
def test_a_function_is_never_trusted_only_classes_are(target):
    with (
        pytest.raises(ConfigError, match=f"'{target}' is a function, not a class"),
        trusting(target),
    ):
        pass


@pytest.mark.parametrize(
    ("registry", "target"),
    [
        (NETS, "subprocess.Popen"),  # a class, but not a network
        (LOSSES, "pathlib.Path"),
        (OPTIMIZERS, "torch.nn.Identity"),  # a module, not an optimiser
        (SCHEDULERS, "subprocess.Popen"),
        (SCHEDULERS, "torch.optim.SGD"),  # an optimiser, not a schedule
    ],
)
def test_a_trusted_class_of_another_kind_than_its_node_is_refused(registry, target):
    with trusting(target), pytest.raises(ConfigError, match="is not a subclass of"):
        registry.build({"_target_": target}, torch.optim.SGD([torch.zeros(1)], lr=1.0))


@pytest.mark.parametrize(
    ("value", "targets"),
    [(None, []), ([], []), ("pkg.Net", ["pkg.Net"]), (["a.B", "c.D"], ["a.B", "c.D"])],
)
def test_trusted_targets_are_a_list_or_one_path_without_brackets(value, targets):
    assert trusted_targets(value) == targets
    with pytest.raises(ConfigError, match=r"trusted_targets=\[mypackage"):
        trusted_targets([1, 2])
