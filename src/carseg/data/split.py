"""The split by car: which cars train and which validate, and the record a checkpoint keeps of it.

Carvana has 16 views of each car. Splitting by image would put 15 other views of every validation
car into training and inflate validation Dice; so all views of a car fall on the same side. The
split depends only on the set of car ids and the seed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from carseg.utils.errors import ConfigError, DataError

# Kaggle's image id: 00087a6bd4dc_01, the car, then its view, 01 .. 16
KAGGLE_ID = r"(?P<car>.+)_(?P<view>\d{2})"


@functools.lru_cache(maxsize=16)
def car_pattern(pattern: str | None) -> re.Pattern:
    """The rule that picks the car out of an image id (``data.car_id_pattern``): a regular
    expression the whole id must match, whose group ``car`` (or first group) is the car; None:
    Kaggle's ``<car>_<view>``.

    Raises:
        ConfigError: not a regular expression with a group.
    """
    if pattern is None:
        pattern = KAGGLE_ID
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ConfigError(
            f"data.car_id_pattern={pattern!r} is not a regular expression: {err}"
        ) from None
    if compiled.groups < 1:
        raise ConfigError(
            f"data.car_id_pattern={pattern!r} has no group: name the car's part, e.g. "
            "'(?P<car>.+)-\\d+' for ids like car42-03"
        )
    return compiled


def car_id(image_id: str, pattern: str | None = None) -> str | None:
    """The car of an image id (``'00087a6bd4dc_01'`` -> ``'00087a6bd4dc'``), None where the id
    does not follow the rule."""
    match = car_pattern(pattern).fullmatch(image_id)
    if match is None:
        return None
    return match.group("car") if "car" in match.re.groupindex else match.group(1)


def view_of(image_id: str) -> str | None:
    """``"01"`` for ``00087a6bd4dc_01``; None for an id not in Kaggle's ``<car>_<view>`` form."""
    match = car_pattern(None).fullmatch(image_id)
    return match["view"] if match else None


def check_car_ids(image_ids: Iterable[str], pattern: str | None = None) -> None:
    """Refuse ids the car cannot be read from: a split by image would score cars that trained.

    Raises:
        DataError: how many, examples, and the option that states another rule.
    """
    ids = list(image_ids)
    odd = [i for i in ids if car_id(i, pattern) is None]
    if odd:
        rule = "Kaggle's <car>_<view> form (view 01 .. 16)" if pattern is None else repr(pattern)
        raise DataError(
            f"{len(odd)} of {len(ids)} image ids do not follow {rule}, so their car is unknown "
            f"(e.g. {', '.join(odd[:3])}); a split must keep each car's views on one side. Rename "
            "them, or state the rule with data.car_id_pattern: a regular expression matching a "
            "whole id whose group 'car' is the car, e.g. data.car_id_pattern='(?P<car>.+)-\\d+'"
        )


def cars_of(image_ids: Iterable[str], pattern: str | None = None) -> list[str]:
    """The sorted car ids of ``image_ids`` (ids not following the rule left out)."""
    cars = {car_id(i, pattern) for i in image_ids}
    return sorted(c for c in cars if c is not None)


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
    image_ids: Sequence[str],
    val_fraction: float,
    seed: int,
    pattern: str | None = None,
    fold_of: tuple[int, int] | None = None,
) -> tuple[list[str], list[str]]:
    """Split image ids into (train, val) so that all views of a car fall on the same side.

    At least one car goes to each side. ``pattern`` is the rule that reads an id's car
    (``car_id``; None: Kaggle's). ``fold_of=(k, n)``: the cars, shuffled by ``seed``, are dealt
    into ``n`` folds, every car into exactly one, and fold ``k`` validates (``val_fraction`` is
    not used): the ``n`` runs of ``k = 0 .. n-1`` train the fold models of an ensemble.

    Raises:
        ConfigError: ``val_fraction`` not in (0, 1).
        DataError: ids the car cannot be read from, or fewer than two cars.
    """
    check_val_fraction(val_fraction)
    check_car_ids(image_ids, pattern)
    cars = cars_of(image_ids, pattern)
    if len(cars) < 2:
        raise DataError(
            f"The data holds {len(cars)} car(s) ({', '.join(cars) or 'none'}): a split by car "
            "needs at least 2, one to train on and one to validate on"
        )
    order = np.random.default_rng(seed).permutation(len(cars))
    if fold_of is not None:
        fold, folds = fold_of
        if folds > len(cars):
            raise DataError(f"data.folds={folds}: more folds than the {len(cars)} cars")
        val_cars = {cars[i] for n, i in enumerate(order) if n % folds == fold}
    else:
        n_val = min(max(round(len(cars) * val_fraction), 1), len(cars) - 1)
        val_cars = {cars[i] for i in order[:n_val]}
    train = sorted(i for i in image_ids if car_id(i, pattern) not in val_cars)
    val = sorted(i for i in image_ids if car_id(i, pattern) in val_cars)
    return train, val


@dataclass(frozen=True)
class SplitRecord:
    """What a checkpoint keeps of its training split, so evaluation scores the unseen cars."""

    root: str
    val_fraction: float
    split_seed: int
    train_cars: list[str]
    val_cars: list[str]
    car_id_pattern: str | None  # the rule its cars were read by; None: Kaggle's
    fold: tuple[int, int] | None  # (k, n): fold k of n validated; None: val_fraction

    @classmethod
    def of(
        cls,
        root: str,
        val_fraction: float,
        seed: int,
        train: Sequence[str],
        val: Sequence[str],
        pattern: str | None,
        fold: tuple[int, int] | None = None,
    ) -> SplitRecord:
        return cls(
            str(root),
            float(val_fraction),
            int(seed),
            cars_of(train, pattern),
            cars_of(val, pattern),
            pattern,
            None if fold is None else (int(fold[0]), int(fold[1])),
        )

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
            car_id_pattern=record.get("car_id_pattern"),  # (records before it: Kaggle's)
            fold=tuple(record["fold"]) if record.get("fold") else None,
        )
