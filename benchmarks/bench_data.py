"""Benchmark 1, the data pipeline: images/s from disk to augmented tensors, four ways.

Plain decoding, JPEG draft decoding (libjpeg DCT scaling), a resized cache, and the default
configuration's DataLoader, at 1/4 and 1/2 scale, interleaved so that their ratios (the issue's
>= 3x target for draft and cache at 1/4 scale) hold on a noisy machine.
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

    from carseg.cache import ResizedCache
    from carseg.dataset import CarvanaDataset
    from carseg.transforms import build_transforms

    ids = CarvanaDataset(root).ids[: s.data_items]
    source_size = list(CarvanaDataset(root, ids[:1]).load_image(ids[0]).shape[:2])  # (H, W)
    variants, loaders = [], []

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
        cache = ResizedCache.build(CarvanaDataset(root, ids, decode_size=size), size, tmp / "cache")

        def dataset(size: tuple[int, int] = size, **kw) -> CarvanaDataset:
            return CarvanaDataset(root, ids, build_transforms(size, train=True), **kw)

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
            Variant(f"data.{name}.cache", f"{label} from the resized cache",
                    items(dataset(decode_size=size, cache=cache), [0])),
            Variant(f"data.{name}.loader",
                    f"{label} {loading}",
                    epoch, workers=partial(worker_pids, loader)),
        ]  # fmt: skip
    interleaved(variants, s, sampler, "data")
    rows = [row(v, "images/s", sampler) for v in variants]
    for r in rows:
        r["source_size"] = source_size
    comparisons = []
    by_id = {r["id"]: r for r in rows}
    for name, (h, w) in s.scales:
        plain = by_id[f"data.{name}.plain"]["median"]
        for kind in ("draft", "cache"):
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
    del variants, loaders  # shuts the persistent workers down
    gc.collect()
    return rows, comparisons
