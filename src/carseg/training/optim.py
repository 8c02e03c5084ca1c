"""The optimiser and the learning-rate schedule from their config nodes (``conf/model/optimizer``,
``conf/model/scheduler``): ``torch.optim`` classes, and ``WarmupCosine``, which anneals over the
training budget however it is given (epochs, steps or ``trainer.max_time``).

A node is plain values (a checkpoint stores it as is): ``_target_`` and the class's arguments,
plus, for a schedule, Lightning's keys for when to step it (``interval``, ``frequency``) and what
``ReduceLROnPlateau`` watches (``monitor``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from carseg.models.registry import Registry
from carseg.utils.checks import check_non_negative, check_positive
from carseg.utils.errors import ConfigError

LIGHTNING_KEYS = ("interval", "frequency", "monitor", "strict")


def training_progress(trainer: pl.Trainer) -> float:
    """How far training is, from 0 to 1: the larger of the steps done over the steps it will take
    (``max_epochs`` or ``max_steps``) and the time spent over ``max_time``, when these are set.

    Both are restored on resume (the step from the loops, the time from Lightning's ``Timer``).
    """
    shares = [0.0]
    total = trainer.estimated_stepping_batches
    if isinstance(total, int | float) and math.isfinite(total) and total > 0:
        shares.append(trainer.global_step / total)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer._duration:
        shares.append(timer.time_elapsed("train") / timer._duration)
    return min(1.0, max(shares))


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """A linear warm-up from ``start_factor`` of the rate over the first ``warmup`` share of
    training, then a cosine down to ``min_factor`` of the rate at its end.

    The share comes from ``progress`` (``training_progress`` in a Lightning fit), so the schedule
    ends where training does whether ``trainer.max_epochs``, ``max_steps`` or ``max_time`` stops
    it. ``warmup=0`` is plain cosine annealing.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        progress: Callable[[], float],
        warmup: float,
        start_factor: float,
        min_factor: float,
    ) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int | float) or not 0 <= warmup < 1:
            raise ConfigError(f"model.scheduler.warmup must be a share in [0, 1), got {warmup!r}")
        self.warmup = float(warmup)
        self.start_factor = check_non_negative("model.scheduler.start_factor", start_factor)
        self.min_factor = check_non_negative("model.scheduler.min_factor", min_factor)
        self._progress = progress
        super().__init__(optimizer)

    def factor(self, share: float) -> float:
        """The rate's multiple at ``share`` of training (0 to 1)."""
        share = min(1.0, max(0.0, share))
        if share < self.warmup:
            return self.start_factor + (1 - self.start_factor) * share / self.warmup
        after = (share - self.warmup) / (1 - self.warmup)
        return self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * after)) / 2

    def get_lr(self) -> list[float]:
        factor = self.factor(self._progress())
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        # plain values only (checkpoints load with weights_only=True): not the progress function
        return {k: v for k, v in super().state_dict().items() if k != "_progress"}


OPTIMIZERS = Registry(
    "model.optimizer", namespaces={"torch.optim": torch.optim}, base=torch.optim.Optimizer
)
SCHEDULERS = Registry(
    "model.scheduler",
    classes=[WarmupCosine],
    namespaces={"torch.optim.lr_scheduler": torch.optim.lr_scheduler},
)


def check_optimizer(node: Mapping[str, Any]) -> None:
    """Refuse an optimiser node that could not be built, before training starts: it is built
    once, over a stand-in parameter, so a value the class refuses is named now."""
    OPTIMIZERS.check(node, "params")
    if "lr" in node:
        check_positive("model.optimizer.lr", node["lr"])
    if "weight_decay" in node:
        check_non_negative("model.optimizer.weight_decay", node["weight_decay"])
    OPTIMIZERS.build(node, [torch.nn.Parameter(torch.zeros(1))])


def check_scheduler(node: Mapping[str, Any]) -> None:
    """Refuse a schedule node that could not be built (an empty node is no schedule)."""
    if node:
        schedule = {k: v for k, v in node.items() if k not in LIGHTNING_KEYS}
        cls = SCHEDULERS.check(schedule, "optimizer", "progress", "total_steps")
        if node.get("interval", "epoch") not in ("epoch", "step"):
            raise ConfigError(
                f"model.scheduler.interval={node['interval']!r}: choose epoch or step"
            )
        # built once on a stand-in optimiser, so a value the class refuses is named now
        stand_in = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        extra: dict[str, Any] = {}
        if issubclass(cls, WarmupCosine):
            extra["progress"] = lambda: 0.0
        elif issubclass(cls, torch.optim.lr_scheduler.OneCycleLR):
            extra["total_steps"] = 10
        SCHEDULERS.build(schedule, stand_in, **extra)


def build_optimizer(
    node: Mapping[str, Any], params: Iterable[torch.nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    """The optimiser ``node`` names over ``params``; ``fused`` (one kernel for every parameter,
    on CUDA) where the class takes it."""
    cls = OPTIMIZERS.check(node, "params")
    extra = {"fused": True} if fused and _takes(cls, "fused") else {}
    return OPTIMIZERS.build(node, params, **extra)


def build_scheduler(
    node: Mapping[str, Any], optimizer: torch.optim.Optimizer, trainer: pl.Trainer
) -> dict[str, Any] | None:
    """Lightning's ``lr_scheduler`` entry for ``node`` (None for an empty node: no schedule).

    ``WarmupCosine`` follows ``training_progress``; ``OneCycleLR`` is given the steps the fit will
    take, which a time budget alone (``trainer.max_time`` without ``max_epochs``) does not tell.

    Raises:
        ConfigError: a node that cannot be built, or one-cycle without a number of steps.
    """
    if not node:
        return None
    lightning = {k: node[k] for k in LIGHTNING_KEYS if k in node}
    schedule = {k: v for k, v in node.items() if k not in LIGHTNING_KEYS}
    cls = SCHEDULERS.check(schedule, "optimizer", "progress", "total_steps")
    extra: dict[str, Any] = {}
    if issubclass(cls, WarmupCosine):
        extra["progress"] = lambda: training_progress(trainer)
    elif issubclass(cls, torch.optim.lr_scheduler.OneCycleLR):
        total = trainer.estimated_stepping_batches
        if not (isinstance(total, int | float) and math.isfinite(total) and total > 0):
            raise ConfigError(
                "model/scheduler=onecycle needs the number of steps: set trainer.max_epochs or "
                "trainer.max_steps (with only trainer.max_time, use model/scheduler=warmup_cosine, "
                "which follows the time budget)"
            )
        extra["total_steps"] = int(total)
    return {"scheduler": SCHEDULERS.build(schedule, optimizer, **extra), **lightning}


def _takes(cls: type, name: str) -> bool:
    params = inspect.signature(cls).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)
