"""The edge option chosen on trained models: Dice at full resolution of each checkpoint's own
validation cars, with the probabilities brought to the photo's size bilinearly (eval's default)
and by the fast guided filter (``refine.guided``) for each radius and eps, and what each costs.

Each checkpoint's probabilities at its own size are computed once per photo; every way of
bringing them to 1918x1280 is then thresholded at the model's threshold and scored by Dice against
the true mask (mean over the photos, as Kaggle scores). The cost is the median time of one
photo's upsampling (bilinear) or guided filter (the grey guide's conversion included), in ms, on
this process's threads.

    python benchmarks/bench_refine.py --ckpt RUN/checkpoints/best.ckpt [more.ckpt ...] \\
        --data ../shared/carvana_dev [--radii 1 2 4] [--eps 1e-4 1e-3 1e-2] [--out FILE] \\
        [--figure docs/edge_refine.png]

``--figure``: one photo's edge before and after, from the first checkpoint: the photo of median
gain, cropped where bilinear and refined masks differ most, each as an error map over the photo
(``carseg.utils.drawing``: magenta false car, green missed car), with the refine options given
first (``--radii`` and ``--eps``' first values).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from harness import REPO, environment

RADII = (1, 2, 4)
EPSILONS = (1e-4, 1e-3, 1e-2)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def score_checkpoint(path: Path, data: Path, radii, epsilons, figure: Path | None = None) -> dict:
    from carseg.data.image_io import read_image, read_mask
    from carseg.inference.loading import load_model
    from carseg.inference.predictor import ModelInput, at_size
    from carseg.inference.refine import fast_guided_upsample, grey_guide

    module, record = load_model(path)
    if record.split is None or record.size is None:
        raise SystemExit(f"{path}: no recorded split and size (a checkpoint of train.py?)")
    prepare = ModelInput(record.size)
    cars = set(record.split.val_cars)
    photos = sorted(p for p in (data / "train").glob("*.jpg") if p.stem.split("_")[0] in cars)
    ways = {"bilinear": None} | {f"guided r{r} eps{e:g}": (r, e) for r in radii for e in epsilons}
    scores: dict[str, list[float]] = {k: [] for k in ways}
    cost: dict[str, list[float]] = {k: [] for k in ways}
    first = f"guided r{radii[0]} eps{epsilons[0]:g}"
    pictures = []  # (gain, photo, bilinear mask, refined mask, truth) for the figure
    for photo in photos:
        image, _ = read_image(photo)
        truth = read_mask(data / "train_masks" / f"{photo.stem}_mask.gif") > 0
        with torch.no_grad():
            probs = torch.sigmoid(module(prepare(image)[None]).float())[0]  # (1, h, w)
        for way, params in ways.items():
            start = time.perf_counter()
            if params is None:
                full = at_size(probs, image.shape[:2])
            else:
                full = fast_guided_upsample(probs, grey_guide(image), *params)
            cost[way].append(time.perf_counter() - start)
            mask = full.numpy() > record.threshold
            scores[way].append(dice(mask, truth))
            if figure is not None and way in ("bilinear", first):
                pictures.append(mask)
        if figure is not None:
            before, after = pictures[-2:]
            pictures[-2:] = [(scores[first][-1] - scores["bilinear"][-1], image, before, after,
                              truth)]  # fmt: skip
    if figure is not None:
        draw_figure(pictures, figure)
    rows = [
        {"way": way, "radius": None if p is None else p[0], "eps": None if p is None else p[1],
         "dice_mean": float(np.mean(scores[way])), "dice_min": float(np.min(scores[way])),
         "ms": 1000 * statistics.median(cost[way])}
        for way, p in ways.items()
    ]  # fmt: skip
    return {"checkpoint": str(path), "size": list(record.size), "photos": len(photos),
            "cars": sorted(cars), "rows": rows}  # fmt: skip


def draw_figure(pictures: list[tuple], path: Path, crop: tuple[int, int] = (180, 270)) -> None:
    """The photo of median gain, where its two masks differ most: the photo, then bilinear's and
    the refined mask's error maps blended over it, enlarged 2x, side by side."""
    from PIL import Image

    from carseg.utils.drawing import error_map, image_grid, resize

    pictures = sorted(pictures, key=lambda p: p[0])
    _, image, before, after, truth = pictures[len(pictures) // 2]
    h, w = crop
    differ = (before != after).astype(np.float32)
    window = torch.nn.functional.avg_pool2d(torch.from_numpy(differ)[None, None], (h, w), 8)
    y, x = np.unravel_index(int(window.argmax()), window.shape[-2:])
    y, x = y * 8, x * 8

    def panel(mask: np.ndarray | None) -> np.ndarray:
        photo = image[y : y + h, x : x + w]
        if mask is not None:
            true, pred = truth[y : y + h, x : x + w], mask[y : y + h, x : x + w]
            wrong = (true.astype(bool) != pred)[..., None]  # only the errors drawn over the photo
            photo = np.where(wrong, error_map(true, pred), photo)
        return resize(np.ascontiguousarray(photo), 2 * h, 2 * w, nearest=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid([panel(None), panel(before), panel(after)], columns=3)).save(path)


def markdown(result: dict) -> str:
    ways = [r["way"] for r in result["checkpoints"][0]["rows"]]
    n = len(result["checkpoints"])
    lines = [
        f"{result['env']['cpu']}, {torch.get_num_threads()} threads; {n} checkpoint(s), "
        "their own validation cars; Dice at 1918x1280, mean over each checkpoint's photos",
        "",
        "| upsampling | Dice (mean of the checkpoints) | gain | worst photo | ms/photo |",
        "|---|---:|---:|---:|---:|",
    ]
    base = statistics.mean(c["rows"][0]["dice_mean"] for c in result["checkpoints"])
    for i, way in enumerate(ways):
        rows = [c["rows"][i] for c in result["checkpoints"]]
        mean = statistics.mean(r["dice_mean"] for r in rows)
        lines.append(
            f"| {way} | {mean:.4f} | {mean - base:+.4f} | {min(r['dice_min'] for r in rows):.4f} "
            f"| {statistics.median(r['ms'] for r in rows):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "carvana_dev")
    parser.add_argument("--radii", type=int, nargs="+", default=list(RADII))
    parser.add_argument("--eps", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_refine.json")
    parser.add_argument("--markdown", action="store_true", help="print --out as markdown")
    parser.add_argument("--figure", type=Path, help="one photo's edge before and after (PNG)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    if not args.ckpt:
        parser.error("--ckpt: one or more checkpoints")
    result = {
        "env": environment(f"real Carvana photos {args.data}"),
        "checkpoints": [
            score_checkpoint(c, args.data, args.radii, args.eps, args.figure if i == 0 else None)
            for i, c in enumerate(args.ckpt)
        ],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
