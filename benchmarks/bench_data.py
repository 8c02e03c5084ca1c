"""Benchmark 1, the data pipeline: images/s from disk to augmented tensors.

At 1/4 and 1/2 scale: plain decoding, JPEG draft decoding (libjpeg DCT scaling), draft decoding
with the masks decoded once (``MaskStore``, the default), a resized cache, and a DataLoader; at
full size (1280x1918, no resize), the full-resolution recipe's items: 1024x1024 crops, masks
from the GIF or from the store. The in-process rows (``num_workers=0``) are what one loader worker
delivers: a machine's loader delivers about its workers times that. Interleaved so that their
ratios hold on a noisy machine.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import partial
from pathlib import Path

from harness import RssSampler, Settings, Variant, interleaved, progress, row, worker_pids


def bench_data(s: Settings, root: Path, tmp: Path, sampler: RssSampler) -> tuple[list, list]:
    """Rows ``data.<scale>.{plain,draft,cache,loader}`` and the ``speedup.*`` comparisons."""
    from torch.utils.data import DataLoader

    from carseg.data.cache import MaskStore, ResizedCache
    from carseg.data.dataset import CarvanaDataset
    from carseg.data.transforms import training_transforms
    from fixtures import default_augmentation

    ids = CarvanaDataset(root, image_dir="train").ids[: s.data_items]
    source_size = list(
        CarvanaDataset(root, ids[:1], image_dir="train").load_image(ids[0]).shape[:2]
    )  # (H, W)
    variants, loaders = [], []
    augmentation = default_augmentation()

    def items(dataset: CarvanaDataset, seed: list[int]) -> Callable[[], int]:
        def run() -> int:
            # The same augmentation draws for every variant of a round.
            dataset.transform.set_random_seed(seed[0])
            seed[0] += 1
            for i in range(len(dataset)):
                dataset[i]
            return len(dataset)

        return run

    for name, size in s.scales:
        h, w = size
        label = f"{'1/4' if name == 'quarter' else '1/2'} {h}x{w}"
        loading = f"DataLoader, {s.loader_workers} workers, batch {s.loader_batch}, draft"
        progress(f"data: building the {h}x{w} cache of {len(ids)} images (not timed)")
        plain_set = CarvanaDataset(root, ids, image_dir="train")
        store = MaskStore.build(plain_set, tmp / "cache", threads=1)
        cache = ResizedCache.build(
            CarvanaDataset(root, ids, image_dir="train", decode_size=size), size, tmp / "cache", 1
        )

        def dataset(size: tuple[int, int] = size, **kw) -> CarvanaDataset:
            augmented = training_transforms(
                size, resize=True, augmentation=augmentation, crop=None, crop_on_car=0.0
            )
            return CarvanaDataset(root, ids, augmented, image_dir="train", **kw)

        loader = DataLoader(
            dataset(decode_size=size),
            batch_size=s.loader_batch,
            shuffle=True,
            num_workers=s.loader_workers,
            persistent_workers=True,
        )
        loaders.append(loader)

        def epoch(loader: DataLoader = loader) -> int:
            return sum(len(images) for images, _ in loader)

        variants += [
            Variant(f"data.{name}.plain", f"{label} plain: full decode + resize",
                    items(dataset(), [0])),
            Variant(f"data.{name}.draft", f"{label} JPEG draft decode + resize",
                    items(dataset(decode_size=size), [0])),
            Variant(f"data.{name}.store", f"{label} draft, masks decoded once (default)",
                    items(dataset(decode_size=size, masks=store), [0])),
            Variant(f"data.{name}.cache", f"{label} from the resized cache",
                    items(dataset(decode_size=size, cache=cache), [0])),
            Variant(f"data.{name}.loader",
                    f"{label} {loading}",
                    epoch, workers=partial(worker_pids, loader)),
        ]  # fmt: skip
    # full size, no resize: the full-resolution recipe's training items (crops of the frame)
    full = tuple(source_size)
    crop = (min(1024, full[0]), min(1024, full[1]))
    masks = MaskStore.build(CarvanaDataset(root, ids, image_dir="train"), tmp / "cache", threads=1)
    for kind, what, kw in (
        ("plain", "GIF masks", {}),
        ("store", "masks decoded once (default)", {"masks": masks}),
    ):
        crops = training_transforms(
            full, resize=False, augmentation=augmentation, crop=crop, crop_on_car=0.75
        )
        dataset = CarvanaDataset(root, ids, crops, image_dir="train", **kw)
        variants.append(
            Variant(f"data.full.{kind}", f"full {full[0]}x{full[1]}, {crop[0]}x{crop[1]} crops, "
                    f"{what}", items(dataset, [0]))
        )  # fmt: skip
    interleaved(variants, s, sampler, "data")
    rows = [row(v, "images/s", sampler) for v in variants]
    for r in rows:
        r["source_size"] = source_size
    comparisons = []
    by_id = {r["id"]: r for r in rows}
    for name, (h, w) in s.scales:
        plain = by_id[f"data.{name}.plain"]["median"]
        for kind in ("draft", "store", "cache"):
            ratio = by_id[f"data.{name}.{kind}"]["median"] / plain
            comparisons.append({
                "id": f"speedup.{name}.{kind}", "section": "data",
                "what": f"{h}x{w}: {kind} / plain",
                "value": ratio,
                "target": 3.0 if name == "quarter" else None,
                "pass": ratio >= 3.0 if name == "quarter" else None,
            })  # fmt: skip
        ratio = by_id[f"data.{name}.loader"]["median"] / by_id[f"data.{name}.draft"]["median"]
        comparisons.append({
            "id": f"speedup.{name}.loader", "section": "data",
            "what": f"{h}x{w}: DataLoader ({s.loader_workers} workers) / draft in-process",
            "value": ratio, "target": None, "pass": None,
        })  # fmt: skip
    comparisons.append({
        "id": "speedup.full.store", "section": "data",
        "what": "full size crops: masks decoded once / GIF every time",
        "value": by_id["data.full.store"]["median"] / by_id["data.full.plain"]["median"],
        "target": None, "pass": None,
    })  # fmt: skip
    del variants, loaders  # shuts the persistent workers down
    gc.collect()
    return rows, comparisons
