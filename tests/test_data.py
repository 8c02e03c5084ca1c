import shutil

import numpy as np
import pytest
import torch

from carseg.data.dataset import CarvanaDataset
from carseg.data.split import car_id, split_by_car
from carseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    inference_transforms,
    training_transforms,
)
from carseg.utils.errors import DataError, DataNotFoundError
from helpers import augmentation, build_datamodule


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


def test_dataset_lists_kaggle_layout(tiny_set):
    ds = CarvanaDataset(tiny_set, image_dir="train")
    assert len(ds) == 5 * 16
    image, mask = ds[0]
    assert image.dtype == np.uint8 and image.shape == (80, 120, 3)
    assert mask.dtype == np.uint8 and mask.shape == (80, 120)
    assert set(np.unique(mask)) == {0, 1}


def test_masks_from_rle_csv_equal_the_gifs(tiny_set, tmp_path):
    """Without train_masks/, masks come from train_masks.csv: the same pixels."""
    root = tmp_path / "csv_only"
    shutil.copytree(tiny_set / "train", root / "train")
    shutil.copy(tiny_set / "train_masks.csv", root / "train_masks.csv")
    from_gif, from_csv = (
        CarvanaDataset(tiny_set, image_dir="train"),
        CarvanaDataset(root, image_dir="train"),
    )
    assert from_csv.ids == from_gif.ids
    for i in range(0, len(from_gif), 7):
        assert np.array_equal(from_csv[i][1], from_gif[i][1])


def test_train_hq_folder_is_read(tiny_set, tmp_path):
    root = tmp_path / "hq"
    shutil.copytree(tiny_set / "train", root / "train_hq")
    shutil.copytree(tiny_set / "train_masks", root / "train_masks")
    assert len(CarvanaDataset(root, image_dir="train_hq")) == 80


def test_transforms_resize_normalise_and_keep_masks_binary(tiny_set):
    ds = CarvanaDataset(
        tiny_set,
        transform=training_transforms(
            (48, 64), resize=True, augmentation=augmentation(), crop=None, crop_on_car=0.0
        ),
        image_dir="train",
    )
    raw = CarvanaDataset(tiny_set, image_dir="train")
    torch.manual_seed(0)
    for i in range(0, 80, 9):
        image, mask = ds[i]
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32
        assert mask.shape == (1, 48, 64) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert 0.3 < mask.mean() / raw[i][1].mean() < 3  # still the car, not an empty warp
    # normalised: a plain validation transform maps the 0..255 image by ImageNet statistics
    val = CarvanaDataset(
        tiny_set,
        transform=inference_transforms((80, 120), resize=True),
        image_dir="train",
    )
    image, _ = val[0]
    expected = (raw[0][0][..., 0] / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(image[0], torch.from_numpy(expected).float(), atol=1e-4)


def test_augmentation_flips_image_and_mask_together(tiny_set):
    """Every augmented pair still lines up: the mask follows the image's flip and warp."""
    import albumentations as A

    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    image, mask = CarvanaDataset(tiny_set, image_dir="train")[3]
    out = flip(image=image, mask=mask)
    assert np.array_equal(out["mask"], mask[:, ::-1])
    assert np.array_equal(out["image"], image[:, ::-1])
    # and the training pipeline changes something from one draw to the next
    ds = CarvanaDataset(
        tiny_set,
        transform=training_transforms(
            (80, 120), resize=True, augmentation=augmentation(), crop=None, crop_on_car=0.0
        ),
        image_dir="train",
    )
    draws = [ds[3][1] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


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


def test_missing_root_says_what_layout_is_expected(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        CarvanaDataset(tmp_path / "nowhere", image_dir="train")
    message = str(err.value)
    assert "nowhere" in message and "train_masks" in message and "kaggle" in message.lower()


def test_missing_masks_are_listed_with_their_count(tiny_set, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tiny_set, root)
    (root / "train_masks.csv").unlink()  # else its rows stand in for the missing files
    gone = sorted((root / "train_masks").glob("*.gif"))[:3]
    for path in gone:
        path.unlink()
    with pytest.raises(DataNotFoundError, match=r"3 of 80 images .* have no mask") as err:
        CarvanaDataset(root, image_dir="train")
    assert gone[0].name.removesuffix("_mask.gif") in str(err.value)


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


def test_jpeg_draft_decodes_at_reduced_scale_close_to_full_decode(tiny_set):
    import cv2

    full = CarvanaDataset(tiny_set, image_dir="train")
    reduced = CarvanaDataset(tiny_set, decode_size=(20, 30), image_dir="train")
    image_id = full.ids[5]
    small = reduced.load_image(image_id, at_least=(20, 30))
    assert small.shape == (20, 30, 3)  # 80x120 at 1/4: the smallest scale still >= 20x30
    assert reduced.load_image(image_id, at_least=(23, 30)).shape == (40, 60, 3)  # 1/2
    assert reduced.load_image(image_id, at_least=(21, 31)).shape == (20, 30, 3)  # 1 px slack
    reference = cv2.resize(full.load_image(image_id), (30, 20), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 6
    image, mask = reduced.read_pair(image_id)
    assert mask.shape == image.shape[:2] == (20, 30) and set(np.unique(mask)) == {0, 1}


def test_cache_gives_the_same_items_and_is_rebuilt_when_a_source_changes(tiny_set, tmp_path):
    import os

    from carseg.data.cache import ResizedCache

    root = tmp_path / "set"
    shutil.copytree(tiny_set, root)
    transform = inference_transforms((32, 48), resize=True)
    plain = CarvanaDataset(root, transform=transform, decode_size=(32, 48), image_dir="train")
    cache = ResizedCache.build(
        CarvanaDataset(root, decode_size=(32, 48), image_dir="train"), (32, 48), tmp_path / "c"
    )
    cached = CarvanaDataset(
        root, transform=transform, decode_size=(32, 48), cache=cache, image_dir="train"
    )
    for i in (0, 17, 79):
        assert torch.equal(cached[i][0], plain[i][0]) and torch.equal(cached[i][1], plain[i][1])
    # reused as it is ...
    again = ResizedCache.build(CarvanaDataset(root, image_dir="train"), (32, 48), tmp_path / "c")
    assert again.folder == cache.folder and len(list((tmp_path / "c").iterdir())) == 1
    # ... until a source file changes
    path = plain.image_paths[plain.ids[0]]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    rebuilt = ResizedCache.build(CarvanaDataset(root, image_dir="train"), (32, 48), tmp_path / "c")
    assert rebuilt.folder != cache.folder and len(list((tmp_path / "c").iterdir())) == 2


def test_datamodule_with_cache_trains_from_it(tiny_set, tmp_path):
    dm = build_datamodule(
        tiny_set, size=(32, 48), num_workers=0, cache=True, cache_dir=tmp_path / "cache"
    )
    dm.setup("fit")
    assert dm.train_set.cache is not None and dm.val_set.cache is dm.train_set.cache
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 48) and set(masks.unique().tolist()) <= {0.0, 1.0}
