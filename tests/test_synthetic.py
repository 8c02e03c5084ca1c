"""Tests of the Carvana-like synthetic data set: layout, determinism, masks, reuse, difficulty."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carseg.data import synthetic
from carseg.data.rle import read_rle_csv, rle_decode
from carseg.data.synthetic import CarSpec, ensure_dataset, generate_dataset, render_view, sample_car

H, W = 64, 96  # small, with Carvana's 2:3 aspect ratio
N_CARS = 3
NAME = re.compile(r"^([0-9a-f]{12})_(0[1-9]|1[0-6])\.jpg$")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("synthetic") / "set", n_cars=N_CARS, height=H, width=W, seed=0
    )


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime in ns, bytes)} of every file under root."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def load_mask(root: Path, image_name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "train_masks" / image_name.replace(".jpg", "_mask.gif")))


def test_layout_matches_kaggle(small_set: Path) -> None:
    assert {p.name for p in small_set.iterdir()} == {
        "train", "train_masks", "train_masks.csv", "metadata.csv", "generator.json",
    }  # fmt: skip
    images = sorted(p.name for p in (small_set / "train").iterdir())
    assert len(images) == N_CARS * 16
    matches = [NAME.match(name) for name in images]
    assert all(matches), images
    cars = sorted({m.group(1) for m in matches})
    assert len(cars) == N_CARS
    for car in cars:
        assert sorted(m.group(2) for m in matches if m.group(1) == car) == [
            f"{v:02d}" for v in range(1, 17)
        ]
    masks = sorted(p.name for p in (small_set / "train_masks").iterdir())
    assert masks == sorted(name.replace(".jpg", "_mask.gif") for name in images)
    for name in images[:: 16 // 4]:
        with Image.open(small_set / "train" / name) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (W, H))
        gif = small_set / "train_masks" / name.replace(".jpg", "_mask.gif")
        with Image.open(gif) as mask:
            assert (mask.format, mask.mode, mask.size) == ("GIF", "P", (W, H))
            assert set(np.unique(np.asarray(mask)).tolist()) == {0, 1}

    lines = (small_set / "metadata.csv").read_text().splitlines()
    assert lines[0] == "id,year,make,model,color"
    rows = [line.split(",") for line in lines[1:]]
    assert [row[0] for row in rows] == cars
    assert all(2000 < int(row[1]) < 2020 and all(row[2:]) for row in rows)
    assert json.loads((small_set / "generator.json").read_text()) == {
        "format": "carseg.synthetic", "format_version": synthetic.FORMAT_VERSION,
        "n_cars": N_CARS, "height": H, "width": W, "seed": 0,
    }  # fmt: skip


def test_csv_rows_decode_to_the_gif_masks(small_set: Path) -> None:
    lines = (small_set / "train_masks.csv").read_text().splitlines()
    assert lines[0] == "img,rle_mask"
    names = [line.split(",")[0] for line in lines[1:]]
    assert names == sorted(p.name for p in (small_set / "train").iterdir())
    for name, rle in read_rle_csv(small_set / "train_masks.csv").items():
        np.testing.assert_array_equal(rle_decode(rle, (H, W)), load_mask(small_set, name))


def test_masks_are_cars_seen_from_16_sides(small_set: Path) -> None:
    def width_of(car: str, view: int) -> int:
        return int(load_mask(small_set, f"{car}_{view:02d}.jpg").any(axis=0).sum())

    for path in sorted((small_set / "train").iterdir()):
        fraction = load_mask(small_set, path.name).mean()
        assert 0.03 < fraction < 0.6, (path.name, fraction)
    cars = sorted({p.name[:12] for p in (small_set / "train").iterdir()})
    for car in cars:
        sides, ends = [width_of(car, 5), width_of(car, 13)], [width_of(car, 1), width_of(car, 9)]
        assert min(sides) > 1.5 * max(ends), (car, sides, ends)  # long side, narrow front/rear
        assert max(ends) < width_of(car, 3) < min(sides)  # a diagonal is in between


def test_mask_is_exactly_where_the_car_hides_the_studio() -> None:
    # Render each view twice, in two studios: the car's pixels are the same in both, the
    # background's differ. Inside the mask (1 pixel in from its edge) the two images must agree,
    # outside it they must differ; a mask off by one pixel fails the first test.
    def interior(m: np.ndarray) -> np.ndarray:
        return m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)

    inside, outside = [], []
    for index in range(8):
        car = sample_car(np.random.default_rng([1, index]))
        other = dataclasses.replace(car, studio_seed=car.studio_seed + 1)
        for view in (1, 3, 5, 9):
            a, mask = render_view(car, view, 80, 120, np.random.default_rng(view))
            b, mask_b = render_view(other, view, 80, 120, np.random.default_rng(view))
            np.testing.assert_array_equal(mask, mask_b)
            same = np.abs(a.astype(int) - b.astype(int)).max(axis=2) <= 2
            inside.append(same[interior(mask == 1)].mean())
            outside.append(1 - same[interior(mask == 0)].mean())
    assert min(inside) > 0.98 and np.mean(inside) > 0.995, (min(inside), np.mean(inside))
    assert min(outside) > 0.95 and np.mean(outside) > 0.99, (min(outside), np.mean(outside))


def test_same_seed_same_bytes_other_seed_other_set(tmp_path: Path) -> None:
    first = snapshot(generate_dataset(tmp_path / "a", n_cars=2, height=H, width=W, seed=7))
    # A fresh interpreter: nothing cached in this process may hide a difference.
    code = (
        "import sys; from carseg.data.synthetic import generate_dataset; "
        f"generate_dataset(sys.argv[1], n_cars=2, height={H}, width={W}, seed=7)"
    )
    src = str(Path(synthetic.__file__).parents[1])  # the carseg under test, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, env=env)
    again = snapshot(tmp_path / "b")
    assert first.keys() == again.keys()
    for name in first:
        assert first[name][1] == again[name][1], name
    other = snapshot(generate_dataset(tmp_path / "c", n_cars=2, height=H, width=W, seed=8))
    assert other.keys() != first.keys()  # other car ids
    assert sorted(v for _, v in other.values()) != sorted(v for _, v in first.values())


def test_sample_car_is_deterministic_and_varied() -> None:
    assert sample_car(np.random.default_rng(3)) == sample_car(np.random.default_rng(3))
    cars = [sample_car(np.random.default_rng([0, i])) for i in range(60)]
    assert all(
        isinstance(car, CarSpec) and re.fullmatch("[0-9a-f]{12}", car.car_id) for car in cars
    )
    assert len({car.car_id for car in cars}) == 60
    assert len({car.body_type for car in cars}) >= 4
    assert len({car.color_name for car in cars}) >= 6
    with pytest.raises(AttributeError):
        cars[0].length = 1.0  # type: ignore[misc]  # frozen


def test_render_view_contract() -> None:
    car = sample_car(np.random.default_rng(0))
    image, mask = render_view(car, 1, 40, 60, np.random.default_rng(0))
    assert (image.shape, image.dtype, mask.shape, mask.dtype) == (
        (40, 60, 3),
        np.uint8,
        (40, 60),
        np.uint8,
    )
    assert set(np.unique(mask).tolist()) == {0, 1}
    for view in (0, 17):
        with pytest.raises(ValueError, match="view must be 1..16"):
            render_view(car, view, 40, 60, np.random.default_rng(0))


def best_threshold_dice(grey: np.ndarray, mask: np.ndarray) -> float:
    """Dice of the best single grey-level threshold (either polarity) against mask."""
    fg = np.bincount(grey[mask == 1], minlength=256)
    bg = np.bincount(grey[mask == 0], minlength=256)
    tp = np.cumsum(fg[::-1])[::-1]  # car predicted where grey >= t, for t = 0..255
    fp = np.cumsum(bg[::-1])[::-1]
    n_fg, n_bg = fg.sum(), bg.sum()
    above = 2 * tp / (tp + fp + n_fg)
    below = 2 * (n_fg - tp) / ((n_fg - tp) + (n_bg - fp) + n_fg)
    return float(max(above.max(), below.max()))


def test_car_is_not_separable_by_a_grey_threshold() -> None:
    scores = []
    for index in range(12):
        car = sample_car(np.random.default_rng([0, index]))
        for view in (1, 3, 5, 9):
            image, mask = render_view(car, view, 80, 120, np.random.default_rng([0, index, view]))
            grey = np.rint(image.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
            scores.append(best_threshold_dice(grey, mask))
    assert np.mean(scores) < 0.75, np.mean(scores)


def test_best_threshold_dice_is_one_for_a_separable_image() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 3:8] = 1
    assert best_threshold_dice((mask * 200 + 20).astype(np.uint8), mask) == 1.0
    assert best_threshold_dice((250 - mask * 200).astype(np.uint8), mask) == 1.0


def test_ensure_dataset_generates_then_reuses(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "empty"
    root.mkdir()  # an empty folder counts as absent
    assert ensure_dataset(root, n_cars=1, height=H, width=W, seed=0) == root
    before = snapshot(root)
    assert len(before) == 16 * 2 + 3

    def must_not_run(*args, **kwargs):
        raise AssertionError("ensure_dataset regenerated a set it should reuse")

    monkeypatch.setattr(synthetic.writer, "_write_dataset", must_not_run)
    assert ensure_dataset(str(root), n_cars=1, height=H, width=W, seed=0) == root
    assert snapshot(root) == before  # same bytes, same modification times
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no temporary folder left


@pytest.mark.parametrize(
    ("other", "message"),
    [({"seed": 1}, "generated with"), ({"width": W + 2}, "generated with"),
     ({"n_cars": 2}, "generated with")],
)  # fmt: skip
def test_ensure_dataset_refuses_other_parameters(tmp_path: Path, other, message) -> None:
    root = generate_dataset(tmp_path / "set", n_cars=1, height=H, width=W, seed=0)
    before = snapshot(root)
    params = {"n_cars": 1, "height": H, "width": W, "seed": 0, **other}
    with pytest.raises(FileExistsError, match=message) as err:
        ensure_dataset(root, **params)
    assert "pick another root" in str(err.value)
    assert snapshot(root) == before


def test_ensure_and_generate_refuse_foreign_content(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("my own data")
    for make in (ensure_dataset, generate_dataset):
        with pytest.raises(FileExistsError, match="pick another root") as err:
            make(root, n_cars=1, height=H, width=W, seed=0)
        assert str(root) in str(err.value)
    with pytest.raises(FileExistsError, match="notes.txt"):
        ensure_dataset(root, n_cars=1, height=H, width=W, seed=0)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(FileExistsError, match="is a file"):
        ensure_dataset(tmp_path / "a_file", n_cars=1, height=H, width=W, seed=0)
    (tmp_path / "a_file").unlink()
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert (root / "notes.txt").read_text() == "my own data"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_a_failed_run_leaves_no_half_written_set(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def render_then_fail(*args, **kwargs):
        # While it runs, the set is written into a hidden sibling, never into root itself.
        assert not (tmp_path / "set").exists()
        assert [p.name[:9] for p in tmp_path.iterdir()] == [".set.tmp-"]
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("killed")
        return render_view(*args, **kwargs)

    monkeypatch.setattr(synthetic.writer, "render_view", render_then_fail)
    with pytest.raises(RuntimeError, match="killed"):
        generate_dataset(tmp_path / "set", n_cars=1, height=H, width=W, seed=0)
    assert list(tmp_path.iterdir()) == []  # neither the set nor its temporary folder


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_cars": 0}, "n_cars must be an integer >= 1"), ({"n_cars": 2.5}, "n_cars"),
     ({"height": 31}, "height must be an integer >= 32"), ({"width": 8}, "width must be"),
     ({"seed": -1}, "seed must be an integer >= 0"), ({"n_cars": True}, "n_cars")],
)  # fmt: skip
def test_arguments_are_validated(tmp_path: Path, kwargs, message) -> None:
    for make in (generate_dataset, ensure_dataset):
        with pytest.raises(ValueError, match=message):
            make(tmp_path / "set", **{"n_cars": 1, "height": H, "width": W, "seed": 0, **kwargs})
    assert list(tmp_path.iterdir()) == []
