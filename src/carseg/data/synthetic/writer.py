"""Writing a synthetic set in Kaggle's Carvana layout, atomically, and reusing it when it matches.

Car ``i`` comes from ``np.random.default_rng([seed, i])``, its view ``v`` from
``default_rng([seed, i, v])``: equal arguments give byte-identical files (same Pillow and libjpeg).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from carseg.data.image_io import save_mask
from carseg.data.rle import rle_encode, write_rle_csv
from carseg.data.synthetic.cars import N_VIEWS, sample_car
from carseg.data.synthetic.render import MIN_SIZE, render_view
from carseg.utils.atomic import atomic_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the rendering changes: a set made by another version is refused


def generate_dataset(root: str | Path, *, n_cars: int, height: int, width: int, seed: int) -> Path:
    """Write a fresh set of ``n_cars`` x 16 views into ``root`` (absent or empty); return it.

    The set is written into the sibling folder ``.{root.name}.tmp-<random>`` and moved into place
    at the end, so a killed run never leaves a half-written set at ``root``. The default size,
    320 x 480, is a quarter of Carvana's 1280 x 1918.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: ``root`` exists and is not an empty folder.
    """
    params = _params(n_cars, height, width, seed)
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} already exists and is not an empty folder; pick another root (or call "
            "ensure_dataset to reuse a set generated with the same parameters)"
        )
    start = time.perf_counter()
    with atomic_dir(root) as tmp:
        _write_dataset(tmp, params)
    seconds = time.perf_counter() - start
    logger.info("Generated %d synthetic cars at %s in %.1f s", n_cars, root, seconds)
    return root


def ensure_dataset(root: str | Path, *, n_cars: int, height: int, width: int, seed: int) -> Path:
    """Reuse the set at ``root`` if it was generated with these parameters, else generate it.

    ``root`` is generated if it does not exist or is an empty folder; nothing is ever
    overwritten or deleted.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: ``root`` holds something else: other files, or a set generated with
            other parameters.
    """
    params = _params(n_cars, height, width, seed)
    root = Path(root)
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return generate_dataset(root, n_cars=n_cars, height=height, width=width, seed=seed)
    marker = root / "generator.json"
    if not marker.is_file():
        names = sorted(p.name for p in root.iterdir())[:5] if root.is_dir() else []
        what = f"holds other files ({', '.join(names)})" if names else "is a file"
        raise FileExistsError(
            f"{root} {what} and no generator.json, so it is not a synthetic set made by carseg; "
            "pick another root, or delete it if you no longer need it"
        )
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        found = f"an unreadable generator.json ({err})"
    if found != params:
        raise FileExistsError(
            f"{root} holds a synthetic set generated with {found}, not the requested {params}; "
            f"pick another root, or delete {root} to generate it again"
        )
    logger.info("Reusing the synthetic set at %s", root)
    return root


def _params(n_cars: int, height: int, width: int, seed: int) -> dict:
    """Check the arguments; return them as generator.json records them."""
    rules = {
        "n_cars": (n_cars, 1, "the number of cars; each is photographed from 16 views"),
        "height": (height, MIN_SIZE, "the image height in pixels, e.g. 320 (Carvana's 1280 / 4)"),
        "width": (width, MIN_SIZE, "the image width in pixels, e.g. 480 (Carvana's 1918 / 4)"),
        "seed": (seed, 0, "a non-negative integer seed"),
    }
    for name, (value, low, hint) in rules.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}: pass {hint}")
    params = {name: int(value) for name, (value, *_) in rules.items()}
    return {"format": "carseg.synthetic", "format_version": FORMAT_VERSION, **params}


def _write_dataset(folder: Path, params: dict) -> None:
    n_cars, height, width, seed = (params[k] for k in ("n_cars", "height", "width", "seed"))
    (folder / "train").mkdir()
    (folder / "train_masks").mkdir()
    rles, cars = {}, {}
    for index in range(n_cars):
        rng = np.random.default_rng([seed, index])
        car = sample_car(rng)
        while car.car_id in cars:  # 48 random bits: a clash is rare, but must not merge two cars
            car = dataclasses.replace(car, car_id=rng.bytes(6).hex())
        cars[car.car_id] = car
        for view in range(1, N_VIEWS + 1):
            view_rng = np.random.default_rng([seed, index, view])
            image, mask = render_view(car, view, height, width, view_rng)
            name = f"{car.car_id}_{view:02d}"
            quality = int(view_rng.integers(70, 96))
            Image.fromarray(image).save(folder / "train" / f"{name}.jpg", quality=quality)
            save_mask(mask, folder / "train_masks" / f"{name}_mask.gif")
            rles[f"{name}.jpg"] = rle_encode(mask)
    write_rle_csv(folder / "train_masks.csv", sorted(rles.items()))
    with (folder / "metadata.csv").open("w", newline="") as f:
        rows = [(c.car_id, c.year, c.make, c.model, c.color_name) for c in cars.values()]
        csv.writer(f, lineterminator="\n").writerows(
            [("id", "year", "make", "model", "color")] + sorted(rows)
        )
    # Written last: its presence marks a complete set.
    (folder / "generator.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
