"""The edge at full resolution without a model: what the fast guided filter (``refine.guided``)
gains over bilinear upsampling, and what it costs, on real photos.

Each true mask is taken down to a model's size by pixel-area averaging (a perfect model's
probabilities: each pixel's share of car), blurred there by a Gaussian of ``--blur`` model pixels
(a real model's edge is softer than that), then brought back to the photo's size as eval and
predict do: bilinear (``carseg.inference.predictor.at_size``), or the fast guided filter with the
grey photo as guide (``carseg.inference.refine.fast_guided_upsample``) for each radius and eps.
``--warp`` first pushes the true outline in and out by a smooth random field of up to that many
photo pixels (a model's misplaced edge, which the photo can correct; 0: none). Both are
thresholded at 0.5 and scored by Dice at full size (1918x1280), mean over the images.
The cost is the median time of one image's bilinear upsampling and of its guided filter, in
milliseconds, on ``--threads`` threads (the guide's grey conversion, done in the loader, apart).

    .venv/bin/python benchmarks/bench_edge.py                # the real sample: 2 cars, 32 photos
    .venv/bin/python benchmarks/bench_edge.py --size 320 480 --blur 0 1 --warp 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from fixtures import SAMPLE_DIR

RADII = (1, 2, 4)
EPSILONS = (1e-4, 1e-3, 1e-2)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2 * float((a & b).sum()) / float(total)


def warped(truth: np.ndarray, amplitude: float, seed: int) -> np.ndarray:
    """A true mask ``(H, W)`` whose outline is pushed in and out by a smooth random field of at
    most ``amplitude`` photo pixels: a model's misplaced edge, which the photo could correct."""
    if amplitude <= 0:
        return truth
    rng = np.random.default_rng(seed)
    h, w = truth.shape
    flow = [
        cv2.resize(rng.normal(size=(6, 9)).astype(np.float32), (w, h), cv2.INTER_CUBIC)
        for _ in range(2)
    ]
    scale = amplitude / max(float(np.abs(f).max()) for f in flow)
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    moved = cv2.remap(
        truth.astype(np.uint8), x + flow[0] * scale, y + flow[1] * scale, cv2.INTER_NEAREST
    )
    return moved.astype(bool)


def model_output(
    truth: np.ndarray, size: tuple[int, int], blur: float, warp: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """A true mask ``(H, W)`` as a model at ``size`` would answer: ``(1, h, w)`` float32."""
    from carseg.data.transforms import resize_image

    small = resize_image(warped(truth, warp, seed).astype(np.float32), size)
    if blur > 0:
        small = cv2.GaussianBlur(small, (0, 0), blur, borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(small)[None]


def timed(fn, repeats: int) -> float:
    """The median milliseconds of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SAMPLE_DIR, help="Kaggle's layout")
    parser.add_argument("--size", type=int, nargs=2, default=(160, 240), metavar=("H", "W"))
    parser.add_argument("--blur", type=float, nargs="+", default=(0.0, 1.0),
                        help="Gaussian sigmas at the model's size, in its pixels")  # fmt: skip
    parser.add_argument("--warp", type=float, nargs="+", default=(0.0, 6.0),
                        help="the edge misplaced by up to this many photo pixels")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timings per image")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from carseg.data.dataset import CarvanaDataset
    from carseg.inference.predictor import at_size
    from carseg.inference.refine import fast_guided_upsample, grey_guide

    dataset = CarvanaDataset(args.data, image_dir="train")
    size = tuple(args.size)
    rows: dict[str, dict] = {}
    cost = {"bilinear": [], **{f"r={r}": [] for r in RADII}}
    for n, image_id in enumerate(dataset.ids):
        photo = dataset.load_image(image_id)
        truth = dataset.load_mask(image_id, photo.shape[:2]).astype(bool)
        guide = grey_guide(photo)
        for blur, warp in ((b, w) for w in args.warp for b in args.blur):
            probs = model_output(truth, size, blur, warp, seed=n)
            key = f"blur={blur:g} warp={warp:g}"
            row = rows.setdefault(key, {"bilinear": []})
            row["bilinear"].append(dice(at_size(probs, truth.shape).numpy() > 0.5, truth))
            for r in RADII:
                for eps in EPSILONS:
                    refined = fast_guided_upsample(probs, guide, r, eps).numpy() > 0.5
                    row.setdefault(f"r={r} eps={eps:g}", []).append(dice(refined, truth))
        probs = model_output(truth, size, args.blur[0])
        cost["bilinear"].append(timed(partial(at_size, probs, truth.shape), args.repeats))
        for r in RADII:
            run = partial(fast_guided_upsample, probs, guide, r, 1e-3)
            cost[f"r={r}"].append(timed(run, args.repeats))

    full = "x".join(str(x) for x in photo.shape[1::-1])
    print(
        f"{len(dataset.ids)} photos of {args.data} at {full}; the true masks at "
        f"{size[0]}x{size[1]}; mean Dice at full size (threshold 0.5)"
    )
    summary: dict = {"size": list(size), "images": len(dataset.ids), "dice": {}, "ms": {}}
    for key, row in rows.items():
        base = float(np.mean(row["bilinear"]))
        print(f"\n{key}: bilinear {base:.5f}")
        print(f"{'':>8}" + "".join(f"{f'eps={e:g}':>20}" for e in EPSILONS))
        for r in RADII:
            cells = []
            for eps in EPSILONS:
                value = float(np.mean(row[f"r={r} eps={eps:g}"]))
                cells.append(f"{value:.5f} ({value - base:+.5f})")
            print(f"{f'r={r}':>8}" + "".join(f"{c:>20}" for c in cells))
        summary["dice"][key] = {k: float(np.mean(v)) for k, v in row.items()}
    print(f"\nms per {full} image, median, {args.threads} thread(s):")
    for key, values in cost.items():
        summary["ms"][key] = statistics.median(values)
        print(f"  {key:>9}: {summary['ms'][key]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
