"""carseg.data.split: all views of a car on one side, by seed."""

from __future__ import annotations

import shutil

import pytest

from carseg.data.split import SplitRecord, car_id, car_pattern, cars_of, split_by_car, view_of
from carseg.utils.errors import ConfigError, DataError
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


def test_ids_not_in_kaggles_form_are_refused_not_split_by_image():
    ids = [f"car{c}-{v:02d}" for c in range(3) for v in range(1, 17)]
    with pytest.raises(DataError, match="48 of 48 image ids do not follow Kaggle's") as err:
        split_by_car(ids, 0.34, seed=0)
    assert "data.car_id_pattern" in str(err.value) and "car0-01" in str(err.value)


def test_a_stated_rule_splits_by_the_car_it_reads():
    ids = [f"car{c}-{v:02d}" for c in range(3) for v in range(1, 17)]
    train, val = split_by_car(ids, 0.34, seed=0, pattern=r"(?P<car>.+)-\d+")
    assert len(val) == 16 and len(train) == 32
    assert not set(cars_of(train, r"(?P<car>.+)-\d+")) & set(cars_of(val, r"(?P<car>.+)-\d+"))
    assert car_id("car1-07", r"(car\d)-\d+") == "car1"  # the first group, when none is named


def test_kaggles_id_gives_the_car_and_the_view_by_one_rule():
    for image_id, car, view in [
        ("00087a6bd4dc_01", "00087a6bd4dc", "01"),
        ("car_with_underscores_16", "car_with_underscores", "16"),
    ]:
        assert (car_id(image_id), view_of(image_id)) == (car, view)
    for image_id in ("photo", "car-01", "car_1", "car_001", "_01x"):
        assert car_id(image_id) is None and view_of(image_id) is None


@pytest.mark.parametrize(
    ("pattern", "message"), [("(", "not a regular expression"), (r".+_\d+", "no group")]
)
def test_a_rule_that_cannot_read_a_car_is_refused(pattern, message):
    with pytest.raises(ConfigError, match=message):
        car_pattern(pattern)


def test_the_record_keeps_the_rule_and_old_records_read_as_kaggles():
    record = SplitRecord.of("/d", 0.5, 1, ["a-01"], ["b-01"], r"(?P<car>.+)-\d+")
    assert record.train_cars == ["a"] and SplitRecord.from_dict(record.to_dict()) == record
    old = {k: v for k, v in record.to_dict().items() if k != "car_id_pattern"}
    assert SplitRecord.from_dict(old).car_id_pattern is None


def test_folds_put_every_car_in_exactly_one_validation_fold():
    ids = _ids(17)
    vals = [set(cars_of(split_by_car(ids, 0.2, seed=3, fold_of=(k, 5))[1])) for k in range(5)]
    assert set().union(*vals) == set(cars_of(ids))  # every car validates once ...
    assert sum(len(v) for v in vals) == 17  # ... and only once
    assert sorted(len(v) for v in vals) == [3, 3, 3, 4, 4]
    train, val = split_by_car(ids, 0.2, seed=3, fold_of=(2, 5))
    assert not set(cars_of(train)) & set(cars_of(val))
    assert split_by_car(ids, 0.2, seed=4, fold_of=(2, 5)) != (train, val)  # the seed deals them
    with pytest.raises(DataError, match="more folds than the 17 cars"):
        split_by_car(ids, 0.2, seed=3, fold_of=(0, 18))
