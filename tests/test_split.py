"""carseg.data.split: all views of a car on one side, by seed."""

from __future__ import annotations

import shutil

import pytest

from carseg.data.split import car_id, split_by_car
from carseg.utils.errors import DataError
from support.configs import build_datamodule


def _ids(n_cars, views=16):
    return [f"car{c:03d}_{v:02d}" for c in range(n_cars) for v in range(1, views + 1)]


@pytest.mark.parametrize("n_cars", [2, 5, 20, 318])
def test_split_keeps_every_car_on_one_side(n_cars):
    ids = _ids(n_cars)
    train, val = split_by_car(ids, val_fraction=0.2, seed=7)
    train_cars, val_cars = {car_id(i) for i in train}, {car_id(i) for i in val}
    assert not train_cars & val_cars
    assert sorted(train + val) == sorted(ids)
    assert train_cars and val_cars
    assert len(val_cars) == max(1, round(n_cars * 0.2))


def test_split_is_deterministic_by_seed_and_independent_of_order():
    ids = _ids(20)
    first = split_by_car(ids, 0.25, seed=1)
    assert split_by_car(list(reversed(ids)), 0.25, seed=1) == first
    assert split_by_car(ids, 0.25, seed=2) != first


def test_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_car(_ids(3), val_fraction=1.0, seed=0)


def test_one_car_cannot_be_split(tiny_set, tmp_path):
    root = tmp_path / "one"
    for sub in ("train", "train_masks"):
        (root / sub).mkdir(parents=True)
    for path in sorted((tiny_set / "train").glob("*.jpg"))[:16]:
        shutil.copy(path, root / "train")
        shutil.copy(tiny_set / "train_masks" / f"{path.stem}_mask.gif", root / "train_masks")
    dm = build_datamodule(root, num_workers=0)
    with pytest.raises(DataError, match="at least 2"):
        dm.setup("fit")
