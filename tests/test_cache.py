"""carseg.data.cache: the resized-image cache and the mask store give the items the files give,
and are rebuilt when a source file changes."""

from __future__ import annotations

import shutil

import torch

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import (
    inference_transforms,
)
from support.configs import build_datamodule


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
