"""Which classes a config or a checkpoint may build, looked up by their ``_target_``.

A checkpoint is untrusted input, and a ``_target_`` is a path to any callable (``os.system`` is
one): so a ``_target_`` read from a checkpoint is never imported. It is looked up among the
classes registered here (carseg's networks and losses), the namespaces a registry allows
(``torch.optim.Adam``: an attribute of ``torch.optim``, nothing imported), or the targets the
user's own command config names (``trusting``: the training config's ``model.net``, or
``trusted_targets`` of eval, predict and export). A trusted target must be a class, of the kind
its node builds (``KINDS``): an ``nn.Module`` for a network or a loss, an optimiser, a schedule;
never a function such as ``os.system``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from carseg.utils.errors import ConfigError, first_line

_trusted: dict[str, type] = {}  # targets the command's own config names, imported on its word

# The class every class a node builds derives from, trusted ones included: a user's class is
# built only where it is of its node's kind.
KINDS: dict[str, type] = {
    "model.net": nn.Module,
    "model.loss": nn.Module,
    "model.optimizer": torch.optim.Optimizer,
    "model.scheduler": torch.optim.lr_scheduler.LRScheduler,
}
_PUBLIC_NAMES = {
    nn.Module: "torch.nn.Module",
    torch.optim.Optimizer: "torch.optim.Optimizer",
    torch.optim.lr_scheduler.LRScheduler: "torch.optim.lr_scheduler.LRScheduler",
}


def public_name(cls: type) -> str:
    """The path a user writes for ``cls`` (``torch.nn.Module``, not its defining module's)."""
    return _PUBLIC_NAMES.get(cls) or dotted(cls)


# A network's arguments that only say how it is first initialised (an ImageNet weights file,
# timm's download), with the values that build it without them: a checkpoint's weights replace
# what they load, so a model is rebuilt from its checkpoint with these values.
INIT_ONLY = {"encoder_weights": None, "pretrained": False}


def as_trained(node: Mapping[str, Any]) -> dict[str, Any]:
    """A network's node with its initialisation-only arguments at ``INIT_ONLY``'s values, to be
    rebuilt and given trained weights (nothing is read or downloaded to initialise it)."""
    return {k: INIT_ONLY.get(k, v) for k, v in node.items()}


def dotted(cls: type) -> str:
    """``carseg.models.unet.UNet``: the ``_target_`` that names ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"


@contextlib.contextmanager
def trusting(*targets: str) -> Iterator[None]:
    """Allow ``targets`` (dotted paths the user's own command config names) to be built inside
    the block, as if registered; outside it they are refused again.

    Raises:
        ConfigError: a target that cannot be imported, or that is not a class (a function such
            as ``os.system`` is never trusted: carseg builds classes of a node's kind only).
    """
    from hydra.utils import get_object

    added = []
    for target in targets:
        if not target or target in _trusted:
            continue
        try:
            found = get_object(target)
        except Exception as err:  # ImportError, AttributeError, Hydra's wrapping of them
            raise ConfigError(
                f"_target_ {target!r} cannot be imported: {first_line(err)}"
            ) from None
        if not isinstance(found, type):
            raise ConfigError(
                f"_target_ {target!r} is a {what_it_is(found)}, not a class: carseg builds "
                f"only classes of the kind a node needs ({_kinds_in_words()}), never a function"
            )
        _trusted[target] = found
        added.append(target)
    try:
        yield
    finally:
        for target in added:
            _trusted.pop(target, None)


def trusted_targets(value: Any, key: str = "trusted_targets") -> list[str]:
    """The dotted paths of a command's ``trusted_targets``: a list of them, or one (given
    without brackets: ``trusted_targets=pkg.nets.MyNet``).

    Raises:
        ConfigError: anything else.
    """
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ConfigError(
        f"{key} must be a list of class paths ({key}=[mypackage.nets.MyNet]), got {value!r}"
    )


def what_it_is(found: Any) -> str:
    """``"function"`` for any function (``os.system`` is a builtin one), else the type's name."""
    return "function" if callable(found) else type(found).__name__


def _kinds_in_words() -> str:
    return "; ".join(f"{kind}: a subclass of {public_name(base)}" for kind, base in KINDS.items())


class Registry:
    """The classes of one kind (networks, losses, optimisers, schedules) that may be built.

    Args:
        kind: what they are, for messages (``"model.net"``).
        classes: classes registered by name (their ``dotted`` path).
        namespaces: modules whose public classes are allowed by attribute lookup
            (``{"torch.optim": torch.optim}`` allows ``torch.optim.AdamW``).
        base: the class every allowed class must derive from.
    """

    def __init__(
        self,
        kind: str,
        classes: Iterable[type] = (),
        namespaces: Mapping[str, ModuleType] | None = None,
        base: type | None = None,
    ) -> None:
        self.kind = kind
        self.classes = {dotted(c): c for c in classes}
        self.namespaces = dict(namespaces or {})
        self.base = base if base is not None else KINDS.get(kind)

    def _kind_in_words(self) -> str:
        return f"a subclass of {public_name(self.base)}" if self.base is not None else "a class"

    def names(self) -> list[str]:
        return sorted(self.classes)

    def lookup(self, target: Any) -> type:
        """The class ``target`` names.

        Raises:
            ConfigError: no ``_target_``, or one that is neither registered, in an allowed
                namespace, nor trusted by the command's config: it is not imported; or a trusted
                class of another kind than the registry's ``base``.
        """
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{self.kind} has no _target_ (got {target!r})")
        found = self.classes.get(target)
        if found is None and target in _trusted:
            found = _trusted[target]
            if self.base is not None and not issubclass(found, self.base):
                raise ConfigError(
                    f"{self.kind}: _target_ {target!r} is not a subclass of "
                    f"{public_name(self.base)}: a {self.kind} must be one"
                )
        if found is None:
            module, _, name = target.rpartition(".")
            namespace = self.namespaces.get(module)
            candidate = getattr(namespace, name, None) if namespace and name[:1].isalpha() else None
            if isinstance(candidate, type) and (
                self.base is None or issubclass(candidate, self.base)
            ):
                found = candidate
        if found is None:
            allowed = ", ".join([*self.names(), *(f"{n}.*" for n in self.namespaces)])
            raise ConfigError(
                f"{self.kind}: _target_ {target!r} is not one carseg builds ({allowed}). A "
                "checkpoint's _target_ is never imported, since that could run any code. If it "
                f"is a class of your own ({self._kind_in_words()}), name it in the command's "
                f"config: trusted_targets=[{target}]"
            )
        return found

    def check(self, node: Mapping[str, Any], *given: str) -> type:
        """The class of ``node``, with its keys checked against the class's arguments (``given``:
        the arguments the caller passes itself).

        Raises:
            ConfigError: an unknown target, or keys the class does not take.
        """
        cls = self.lookup(node.get("_target_"))
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return cls
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return cls
        unknown = [k for k in arguments(node) if k not in params]
        if unknown:
            takes = ", ".join(n for n in params if n not in given and n != "self")
            raise ConfigError(
                f"{self.kind}: {dotted(cls)} takes no argument {', '.join(unknown)} (it takes "
                f"{takes})"
            )
        return cls

    def build(self, node: Mapping[str, Any], *args: Any, **extra: Any) -> Any:
        """``cls(*args, **node's arguments, **extra)`` for the class ``node`` names.

        Raises:
            ConfigError: as ``check``, or the class refused its arguments.
        """
        cls = self.check(node, *extra)
        try:
            return cls(*args, **arguments(node), **extra)
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{self.kind} ({dotted(cls)}): {first_line(err)}") from None


def arguments(node: Mapping[str, Any]) -> dict[str, Any]:
    """A config node's keyword arguments: its keys without Hydra's ``_target_``-style ones."""
    return {k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}


def _networks() -> list[type]:
    from carseg.models.efficientnet_unet import EfficientNetLiteUNet
    from carseg.models.resnet_unet import ResNetUNet
    from carseg.models.timm_unet import TimmUNet  # (imports timm only when one is built)
    from carseg.models.unet import UNet

    return [UNet, ResNetUNet, EfficientNetLiteUNet, TimmUNet]


def _losses() -> list[type]:
    from carseg.models import losses

    return [losses.BCE, losses.BCEDice, losses.BCELogDice, losses.BoundaryBCEDice]


NETS = Registry("model.net", _networks())
LOSSES = Registry("model.loss", _losses())
