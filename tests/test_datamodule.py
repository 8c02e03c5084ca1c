"""carseg.data.datamodule: a Carvana folder split by car into loaders, crops to train and whole
frames to validate."""

from __future__ import annotations

import pytest

from carseg.data.split import car_id
from carseg.utils.errors import CarsegError, DataError
from support.configs import build_datamodule


def test_training_batches_are_crops_and_validation_batches_whole_frames(tiny_set):
    dm = build_datamodule(
        tiny_set, size=(64, 96), crop=(32, 32), batch_size=4, val_batch_size=2, num_workers=0
    )
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 1, 32, 32)
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 64, 96) and masks.shape == (2, 1, 64, 96)
    assert dm.hparams.crop == [32, 32] and dm.hparams.size == [64, 96]


@pytest.mark.parametrize(("crop", "message"), [((96, 96), "does not fit"), ((0, 8), "data.crop")])
def test_a_crop_that_does_not_fit_is_refused(tiny_set, crop, message):
    with pytest.raises(CarsegError, match=message):
        build_datamodule(tiny_set, size=(64, 96), crop=list(crop), num_workers=0)


def test_datamodule_splits_by_car_and_batches(tiny_set):
    dm = build_datamodule(tiny_set, size=(32, 48), batch_size=6, num_workers=0, val_fraction=0.4)
    dm.setup("fit")
    train_cars = {car_id(i) for i in dm.train_set.ids}
    val_cars = {car_id(i) for i in dm.val_set.ids}
    assert len(val_cars) == 2 and len(train_cars) == 3 and not train_cars & val_cars
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (6, 3, 32, 48) and masks.shape == (6, 1, 32, 48)
    # validation keeps every image: 32 images in batches of 6 -> last batch of 2
    sizes = [len(b[0]) for b in dm.val_dataloader()]
    assert sum(sizes) == 32 and sizes[-1] == 2


def test_datamodule_generates_the_synthetic_set_once(tmp_path):
    root = tmp_path / "syn"
    params = {"n_cars": 2, "height": 64, "width": 96, "seed": 3}
    dm = build_datamodule(root, size=(32, 48), num_workers=0, synthetic=params)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 16 and len(dm.val_set) == 16
    stamp = (root / "train_masks.csv").stat().st_mtime_ns
    build_datamodule(root, synthetic=params).prepare_data()
    assert (root / "train_masks.csv").stat().st_mtime_ns == stamp


def test_a_folder_of_ids_in_another_form_needs_its_rule_stated(tiny_set, tmp_path):
    """Photos named <car>-<view>: refused as they are, split by car once the rule is stated."""
    root = tmp_path / "renamed"
    for folder in ("train", "train_masks"):
        (root / folder).mkdir(parents=True)
        for path in (tiny_set / folder).iterdir():
            (root / folder / path.name.replace("_", "-", 1)).write_bytes(path.read_bytes())
    with pytest.raises(DataError, match="do not follow Kaggle's <car>_<view> form"):
        build_datamodule(root, size=(32, 48), num_workers=0, mask_cache=False).setup("fit")
    dm = build_datamodule(root, size=(32, 48), num_workers=0, mask_cache=False,
                          car_id_pattern=r"(?P<car>[0-9a-f]+)-\d+")  # fmt: skip
    dm.setup("fit")
    assert len(dm.split.train_cars) + len(dm.split.val_cars) == 5
    assert dm.split.car_id_pattern == r"(?P<car>[0-9a-f]+)-\d+"


def test_data_folds_validate_one_fold_and_record_it(tiny_set):
    dm = build_datamodule(tiny_set, size=(32, 48), num_workers=0, folds=5, fold=3)
    dm.setup("fit")
    assert len(dm.split.val_cars) == 1 and len(dm.split.train_cars) == 4
    assert dm.split.fold == (3, 5)
    with pytest.raises(CarsegError, match="data.fold=5: the folds are numbered 0 to 4"):
        build_datamodule(tiny_set, folds=5, fold=5)
    with pytest.raises(CarsegError, match="data.folds must be an integer >= 2"):
        build_datamodule(tiny_set, folds=1, fold=0)


def test_a_fold_without_folds_is_refused_not_ignored(tiny_set):
    with pytest.raises(CarsegError, match="data.fold=1 without data.folds"):
        build_datamodule(tiny_set, fold=1)
    with pytest.raises(CarsegError, match="data.fold must be an integer >= 0"):
        build_datamodule(tiny_set, folds=3)  # (and no fold)


def _one_bad_mask(tmp_path):
    """2 generated cars at 32x48, the first image's mask of another size."""
    import numpy as np
    from PIL import Image

    from carseg.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "d", n_cars=2, height=32, width=48, seed=0)
    first = sorted((root / "train").iterdir())[0].stem
    (root / "train_masks.csv").unlink(missing_ok=True)  # the GIFs are the masks
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "train_masks" / f"{first}_mask.gif")
    return root, first


def test_the_scoring_set_is_the_folder_at_its_own_size_checked_as_training_checks_it(tmp_path):
    """Evaluation's images come from the data module: full size, untransformed, a bad file
    refused (on_bad_file=error), left out (skip), or not looked for (validate=false)."""
    root, bad = _one_bad_mask(tmp_path)
    strict = build_datamodule(root, size=(16, 24), num_workers=0)
    listed = strict.listing()
    assert len(listed) == 32 and bad in listed.ids
    with pytest.raises(DataError, match="data.on_bad_file=skip"):
        strict.scoring_set(listed, listed.ids)
    skipping = build_datamodule(root, size=(16, 24), num_workers=0, on_bad_file="skip")
    scored = skipping.scoring_set(listed, listed.ids[:4])
    assert scored.ids == listed.ids[1:4] and bad == listed.ids[0]
    image, mask = scored[0]
    assert image.shape == (32, 48, 3) and mask.shape == (32, 48)  # not resized to data.size
    unchecked = build_datamodule(root, size=(16, 24), num_workers=0, validate=False)
    assert unchecked.scoring_set(listed, listed.ids[:4]).ids == listed.ids[:4]


def test_the_split_evaluation_falls_back_on_is_the_one_training_makes(tiny_set):
    dm = build_datamodule(tiny_set, size=(32, 48), num_workers=0, folds=5, fold=2)
    dm.setup()
    train_ids, val_ids = dm.split_ids(dm.listing().ids)
    assert val_ids == dm.val_set.ids and train_ids == dm.train_set.ids
    assert {car_id(i) for i in val_ids} == set(dm.split.val_cars)
