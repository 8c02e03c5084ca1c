"""carseg.data.cache: the resized-image cache and the mask store give the items the files give,
are reused while their sources stay the same and rebuilt when one changes, and reach loader
workers without copying their data."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import torch
from torch.utils.data import DataLoader

from carseg.data.cache import MaskStore, ResizedCache
from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import inference_transforms
from support.configs import build_datamodule


def _touch(path) -> None:
    """A changed source file: the same bytes, a newer modification time."""
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


def test_cache_gives_the_same_items_and_is_rebuilt_when_a_source_changes(tiny_set, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(tiny_set, root)
    transform = inference_transforms((32, 48), resize=True)
    plain = CarvanaDataset(root, transform=transform, decode_size=(32, 48), image_dir="train")
    cache = ResizedCache.build(
        CarvanaDataset(root, decode_size=(32, 48), image_dir="train"), (32, 48), tmp_path / "c", 2
    )
    cached = plain.subset(
        plain.ids, inference_transforms((32, 48), resize=False), (32, 48), cache=cache
    )
    for i in (0, 17, 79):
        assert torch.equal(cached[i][0], plain[i][0]) and torch.equal(cached[i][1], plain[i][1])
    # reused as it is ...
    again = ResizedCache.build(CarvanaDataset(root, image_dir="train"), (32, 48), tmp_path / "c", 2)
    assert again.folder == cache.folder and len(list((tmp_path / "c").iterdir())) == 1
    # ... until a source file changes
    _touch(plain.image_paths[plain.ids[0]])
    rebuilt = ResizedCache.build(
        CarvanaDataset(root, image_dir="train"), (32, 48), tmp_path / "c", 2
    )
    assert rebuilt.folder != cache.folder and len(list((tmp_path / "c").iterdir())) == 2


def test_datamodule_with_cache_trains_from_it_and_resizes_once(tiny_set, tmp_path):
    dm = build_datamodule(
        tiny_set, size=(32, 48), num_workers=0, cache=True, cache_dir=tmp_path / "cache"
    )
    dm.setup("fit")
    assert dm.train_set.cache is not None and dm.val_set.cache is dm.train_set.cache
    # the cache holds the images at the training size: the pipelines do not resize again
    for dataset in (dm.train_set, dm.val_set):
        steps = [type(t).__name__ for t in dataset.transform.transforms]
        assert "Resize" not in steps, steps
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 48) and set(masks.unique().tolist()) <= {0.0, 1.0}


def test_the_mask_store_gives_each_mask_as_its_file_does(tiny_set, tmp_path):
    source = CarvanaDataset(tiny_set, image_dir="train")
    store = MaskStore.build(source, tmp_path / "cache", threads=2)
    assert all(i in store for i in source.ids) and "not_an_id" not in store
    for image_id in source.ids[::7]:
        mask = store.get(image_id)
        assert mask.dtype == np.uint8 and np.array_equal(mask, source.load_mask(image_id))
    # 1 bit a pixel: 80 masks of 80x120
    bits = (tmp_path / "cache").glob("masks-*/masks.bits")
    assert next(bits).stat().st_size == 80 * 80 * 120 // 8


def test_the_mask_store_is_reused_and_rebuilt_when_a_mask_file_changes(tiny_set, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(tiny_set, root)
    source = CarvanaDataset(root, image_dir="train")
    first = MaskStore.build(source, tmp_path / "cache", threads=1)
    assert MaskStore.build(source, tmp_path / "cache", threads=1).folder == first.folder
    _touch(source.mask_paths[source.ids[3]])
    changed = MaskStore.build(CarvanaDataset(root, image_dir="train"), tmp_path / "cache", 1)
    assert changed.folder != first.folder
    assert len(list((tmp_path / "cache").glob("masks-*"))) == 2


def test_the_mask_store_pickles_without_its_data_and_serves_loader_workers(tiny_set, tmp_path):
    """A spawned worker receives the store pickled: the index, not the mapped bits, which it
    maps itself; the masks its items hold are the files'."""
    source = CarvanaDataset(tiny_set, image_dir="train")
    store = MaskStore.build(source, tmp_path / "cache", threads=1)
    store.get(source.ids[0])  # mapped in this process
    state = pickle.dumps(store)
    assert len(state) < 20_000  # the index only: the 96 KB of bits stay in the file
    assert pickle.loads(state)._bits is None
    dataset = source.subset(source.ids[:8], masks=store)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    masks = torch.cat([m for _, m in loader])
    expected = np.stack([source.load_mask(i) for i in source.ids[:8]])
    assert np.array_equal(masks.numpy(), expected)


def test_a_cache_built_on_several_threads_holds_what_one_thread_builds(tiny_set, tmp_path):
    source = CarvanaDataset(tiny_set, image_dir="train", decode_size=(40, 60))
    one = ResizedCache.build(source, (40, 60), tmp_path / "one", threads=1)
    two = ResizedCache.build(source, (40, 60), tmp_path / "two", threads=2)
    for image_id in source.ids:
        (a_image, a_mask), (b_image, b_mask) = one.get(image_id), two.get(image_id)
        assert np.array_equal(a_image, b_image) and np.array_equal(a_mask, b_mask)
