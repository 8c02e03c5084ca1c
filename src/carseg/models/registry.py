"""Which classes a config or a checkpoint may build, looked up by their ``_target_``.

A checkpoint is untrusted input, and a ``_target_`` is a path to any callable (``os.system`` is
one): so a ``_target_`` read from a checkpoint is never imported. It is looked up among the
classes registered here (carseg's networks and losses), the namespaces a registry allows
(``torch.optim.Adam``: an attribute of ``torch.optim``, nothing imported), or the targets the
user's own command config names (``trusting``: the training config's ``model.net``, or
``trusted_targets`` of eval, predict and export).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any

from carseg.utils.errors import ConfigError, first_line

_trusted: dict[str, type] = {}  # targets the command's own config names, imported on its word

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
        ConfigError: a target that cannot be imported.
    """
    from hydra.utils import get_object

    added = []
    for target in targets:
        if not target or target in _trusted:
            continue
        try:
            _trusted[target] = get_object(target)
        except Exception as err:  # ImportError, AttributeError, Hydra's wrapping of them
            raise ConfigError(
                f"_target_ {target!r} cannot be imported: {first_line(err)}"
            ) from None
        added.append(target)
    try:
        yield
    finally:
        for target in added:
            _trusted.pop(target, None)


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
        self.base = base

    def names(self) -> list[str]:
        return sorted(self.classes)

    def lookup(self, target: Any) -> type:
        """The class ``target`` names.

        Raises:
            ConfigError: no ``_target_``, or one that is neither registered, in an allowed
                namespace, nor trusted by the command's config: it is not imported.
        """
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{self.kind} has no _target_ (got {target!r})")
        found = self.classes.get(target) or _trusted.get(target)
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
                "checkpoint's _target_ is never imported, since that could run any code; to build "
                f"your own class, name it in the command's config: trusted_targets=[{target}]"
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
    from carseg.models.resnet_unet import ResNetUNet
    from carseg.models.timm_unet import TimmUNet  # (imports timm only when one is built)
    from carseg.models.unet import UNet

    return [UNet, ResNetUNet, TimmUNet]


def _losses() -> list[type]:
    from carseg.models import losses

    return [losses.BCE, losses.BCEDice, losses.BCELogDice, losses.BoundaryBCEDice]


NETS = Registry("model.net", _networks())
LOSSES = Registry("model.loss", _losses())
