"""The split by car: which cars train and which validate, and the record a checkpoint keeps of it.

Carvana has 16 views of each car. Splitting by image would put 15 other views of every validation
car into training and inflate validation Dice; so all views of a car fall on the same side. The
split depends only on the set of car ids and the seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from carseg.utils.errors import ConfigError, DataError


def car_id(image_id: str) -> str:
    """``'00087a6bd4dc_01'`` -> ``'00087a6bd4dc'``: the id up to the last underscore."""
    return image_id.rsplit("_", 1)[0]


def cars_of(image_ids: Iterable[str]) -> list[str]:
    """The sorted car ids of ``image_ids``."""
    return sorted({car_id(i) for i in image_ids})


def check_val_fraction(val_fraction: float) -> float:
    """``val_fraction`` if it is in (0, 1).

    Raises:
        ConfigError: 0 (nothing to validate on: val/dice, the checkpoint and early stopping need
            it) or a value outside (0, 1).
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise ConfigError(f"data.val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction={val_fraction}: the share of cars held out for validation must be "
            "between 0 and 1 (exclusive); val/dice, the best checkpoint and early stopping are "
            "measured on those cars. 0.2 holds out one car in five"
        )
    return float(val_fraction)


def split_by_car(
    image_ids: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split image ids into (train, val) so that all views of a car fall on the same side.

    At least one car goes to each side.

    Raises:
        ConfigError: ``val_fraction`` not in (0, 1).
        DataError: fewer than two cars.
    """
    check_val_fraction(val_fraction)
    cars = cars_of(image_ids)
    if len(cars) < 2:
        raise DataError(
            f"The data holds {len(cars)} car(s) ({', '.join(cars) or 'none'}): a split by car "
            "needs at least 2, one to train on and one to validate on"
        )
    n_val = min(max(round(len(cars) * val_fraction), 1), len(cars) - 1)
    order = np.random.default_rng(seed).permutation(len(cars))
    val_cars = {cars[i] for i in order[:n_val]}
    train = sorted(i for i in image_ids if car_id(i) not in val_cars)
    val = sorted(i for i in image_ids if car_id(i) in val_cars)
    return train, val


@dataclass(frozen=True)
class SplitRecord:
    """What a checkpoint keeps of its training split, so evaluation scores the unseen cars."""

    root: str
    val_fraction: float
    split_seed: int
    train_cars: list[str]
    val_cars: list[str]

    @classmethod
    def of(
        cls, root: str, val_fraction: float, seed: int, train: Sequence[str], val: Sequence[str]
    ) -> SplitRecord:
        return cls(str(root), float(val_fraction), int(seed), cars_of(train), cars_of(val))

    def to_dict(self) -> dict:
        """Plain values, as a checkpoint stores them (``torch.load(weights_only=True)`` reads)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> SplitRecord:
        return cls(
            root=str(record["root"]),
            val_fraction=float(record["val_fraction"]),
            split_seed=int(record["split_seed"]),
            train_cars=list(record["train_cars"]),
            val_cars=list(record["val_cars"]),
        )
