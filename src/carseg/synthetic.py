"""Carvana-like synthetic data: cars on a studio turntable, written in Kaggle's on-disk layout.

Layout under ``root`` (as Kaggle's ``carvana-image-masking-challenge``)::

    train/<car>_<view>.jpg              RGB JPEG; car = 12 lowercase hex digits, view = 01..16
    train_masks/<car>_<view>_mask.gif   palette GIF of the same size, pixel values {0, 1}
    train_masks.csv                     img,rle_mask (``carseg.rle``), one row per image, sorted
    metadata.csv                        id,year,make,model,color (invented), one row per car
    generator.json                      the generation parameters; written last

Each car is a small 3-D model (a chamfered lower body raised by the ground clearance, a cabin
frustum with inset windows, four wheels, mirrors), turned 22.5 degrees per view (01 front, 05 side,
09 rear, 13 other side) and projected orthographically from a slightly raised camera. Each part is
drawn as the convex hull of its projected points into a label map at 2x supersampling; colours
are composed with numpy and box-downsampled, so the mask (coverage >= 0.5) lines up with the
anti-aliased car. The studio (wall and floor gradients, turntable, soft shadow, clutter in colours
close to the car's) keeps the car from being separable by a colour threshold.

Determinism: car ``i`` is drawn from ``np.random.default_rng([seed, i])`` and its view ``v`` from
``np.random.default_rng([seed, i, v])``, so equal arguments give byte-identical files (with the
same Pillow and libjpeg).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from carseg.rle import rle_encode, write_rle_csv

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
N_VIEWS = 16  # 22.5 degrees apart
MIN_SIZE = 32
_SS = 2  # supersampling factor of the label map
BODY, GLASS, TYRE, RIM, HEADLIGHT, TAILLIGHT, TRIM = range(1, 8)  # labels; 0 is background
_LIGHT = np.array([-0.35, 0.75, 0.55]) / np.linalg.norm([-0.35, 0.75, 0.55])  # camera frame


class _BodyType(NamedTuple):
    weight: float
    length: tuple[float, float]  # metres; every range is sampled uniformly
    width: tuple[float, float]
    clearance: tuple[float, float]
    body_top: tuple[float, float]
    roof: tuple[float, float]
    cabin: tuple[float, float, float, float]  # base front/rear, roof front/rear: fraction from nose
    nose: tuple[float, float]  # setback of the hood's front edge
    tail: tuple[float, float]  # setback of the trunk's rear edge
    wheel_radius: tuple[float, float]
    side_windows: int


_BODY_TYPES = {
    "sedan": _BodyType(
        0.35, (4.4, 5.0), (1.75, 1.9), (0.14, 0.2), (0.82, 0.95), (1.38, 1.5),
        (0.3, 0.78, 0.47, 0.68), (0.15, 0.35), (0.1, 0.25), (0.3, 0.34), 2,
    ),
    "hatchback": _BodyType(
        0.2, (3.8, 4.3), (1.7, 1.82), (0.14, 0.19), (0.82, 0.92), (1.42, 1.52),
        (0.32, 0.97, 0.48, 0.9), (0.15, 0.3), (0.02, 0.06), (0.29, 0.33), 2,
    ),
    "suv": _BodyType(
        0.25, (4.4, 4.9), (1.85, 2.0), (0.2, 0.28), (1.0, 1.12), (1.65, 1.8),
        (0.28, 0.98, 0.42, 0.94), (0.1, 0.25), (0.02, 0.06), (0.35, 0.4), 3,
    ),
    "van": _BodyType(
        0.1, (4.6, 5.2), (1.9, 2.0), (0.16, 0.22), (1.0, 1.1), (1.9, 2.1),
        (0.14, 0.99, 0.24, 0.98), (0.05, 0.15), (0.01, 0.04), (0.32, 0.36), 3,
    ),
    "pickup": _BodyType(
        0.1, (5.0, 5.6), (1.9, 2.02), (0.24, 0.32), (1.05, 1.15), (1.8, 1.95),
        (0.3, 0.6, 0.4, 0.59), (0.1, 0.2), (0.02, 0.06), (0.36, 0.42), 1,
    ),
}  # fmt: skip
# Carvana's stock is mostly white, silver, grey and black: hard on a light studio background.
_COLORS = (  # name, RGB, weight
    ("white", (236, 236, 233), 0.22), ("silver", (192, 194, 198), 0.2),
    ("grey", (118, 120, 124), 0.14), ("black", (24, 24, 27), 0.14),
    ("red", (160, 24, 30), 0.08), ("blue", (32, 62, 140), 0.08),
    ("dark green", (28, 68, 46), 0.05), ("beige", (206, 190, 160), 0.05),
    ("dark blue", (24, 32, 66), 0.04),
)  # fmt: skip
_MAKES = ("Norvik", "Castellan", "Auberon", "Kestrel", "Maruna", "Vantor", "Solenne", "Brask")
_MODELS = ("Aurel", "Brisk", "Calyx", "Dune", "Ember", "Fjord", "Glint", "Halcyon", "Isla", "Lumo")


@dataclasses.dataclass(frozen=True)
class CarSpec:
    """One car and its photo session. Lengths in metres, colours RGB 0-255.

    The car frame has x forward, y to the car's left and z up, its origin on the ground under the
    car's centre. The studio, camera elevation and framing belong to the car: its 16 views share them.
    """

    car_id: str  # 12 lowercase hex digits
    body_type: str  # one of sedan, hatchback, suv, van, pickup
    length: float
    width: float  # without mirrors
    clearance: float  # ground to the bottom of the body
    body_top: float  # ground to the hood and trunk lid
    roof: float
    cabin: tuple[float, float, float, float]  # x of the cabin's base front/rear, roof front/rear
    nose: float
    tail: float
    chamfer: float  # plan-view corner cut
    wheel_radius: float
    wheel_width: float
    axles: tuple[float, float]  # x of the front and rear axles
    side_windows: int
    mirrors: bool
    color_name: str
    color: tuple[int, int, int]
    rim_color: tuple[int, int, int]
    gloss: float  # strength of the specular band, 0-1
    elevation: float  # camera elevation, degrees
    fill: float  # side-view length as a fraction of the image width
    centre: tuple[float, float]  # image column and row of the car's ground centre, fractions
    shadow: float  # darkness of the shadow under the car, 0-1
    studio_seed: int  # seeds the background
    year: int
    make: str
    model: str


def sample_car(rng: np.random.Generator) -> CarSpec:
    """Draw a car (body type, dimensions, colour, framing) and its id from ``rng``."""

    def u(lo: float, hi: float) -> float:
        return round(float(rng.uniform(lo, hi)), 4)

    types = list(_BODY_TYPES)
    weights = np.array([t.weight for t in _BODY_TYPES.values()])
    body_type = types[rng.choice(len(types), p=weights / weights.sum())]
    bt = _BODY_TYPES[body_type]
    length = u(*bt.length)
    fracs = np.clip(np.array(bt.cabin) + rng.uniform(-0.02, 0.02, 4), 0.0, 0.995)
    p = np.array([w for *_, w in _COLORS])
    name, rgb, _ = _COLORS[rng.choice(len(_COLORS), p=p / p.sum())]
    color = np.clip(np.array(rgb) + rng.integers(-6, 7, 3), 0, 255)
    rim = np.full(3, u(165, 215) if rng.random() < 0.7 else u(45, 80)) + rng.integers(-4, 5, 3)
    return CarSpec(
        car_id=_car_id(rng),
        body_type=body_type,
        length=length,
        width=u(*bt.width),
        clearance=u(*bt.clearance),
        body_top=u(*bt.body_top),
        roof=u(*bt.roof),
        cabin=tuple(round(float(length / 2 - f * length), 4) for f in fracs),
        nose=u(*bt.nose),
        tail=u(*bt.tail),
        chamfer=u(0.12, 0.3),
        wheel_radius=u(*bt.wheel_radius),
        wheel_width=u(0.2, 0.28),
        axles=(round(length * u(0.29, 0.32), 4), round(-length * u(0.27, 0.31), 4)),
        side_windows=bt.side_windows,
        mirrors=bool(rng.random() < 0.85),
        color_name=name,
        color=tuple(int(c) for c in color),
        rim_color=tuple(int(c) for c in np.clip(rim, 0, 255)),
        gloss=u(0.1, 0.4),
        elevation=u(5.0, 15.0),
        fill=u(0.6, 0.8),
        centre=(u(0.46, 0.54), u(0.74, 0.8)),
        shadow=u(0.3, 0.6),
        studio_seed=int(rng.integers(2**31)),
        year=int(rng.integers(2001, 2018)),
        make=_MAKES[rng.integers(len(_MAKES))],
        model=_MODELS[rng.integers(len(_MODELS))],
    )


def _car_id(rng: np.random.Generator) -> str:
    return rng.bytes(6).hex()


# --- geometry: the car as convex parts in the car frame --------------------------------------


class _Part(NamedTuple):
    label: int
    points: np.ndarray  # (N, 3); the part is drawn as the convex hull of their projection
    faces: list  # [(normal, polygon)]: shading, drawn where the face looks at the camera
    decals: list  # [(label, normal, polygon)]: windows, lights, rims on a face of the part
    side: int  # +1/-1 on the car's left/right side, 0 in the middle


def _ring(front: float, rear: float, half_width: float, chamfer: float, z: float) -> np.ndarray:
    """Plan-view octagon (a rectangle with cut corners) at height z, counter-clockwise: (8, 3).

    Edge 0 is the front (x = front), edge 4 the rear, edges 2 and 6 the left and right sides.
    """
    f, r, w, c = front, -rear, half_width, chamfer
    xy = [(f, -w + c), (f, w - c), (f - c, w), (r + c, w), (r, w - c), (r, -w + c), (r + c, -w),
          (f - c, -w)]  # fmt: skip
    return np.array([(x, y, z) for x, y in xy])


def _rect(front: float, rear: float, half_width: float, z: float) -> np.ndarray:
    """Plan-view rectangle at height z, counter-clockwise from the front edge: (4, 3)."""
    return np.array([(front, -half_width, z), (front, half_width, z), (rear, half_width, z),
                     (rear, -half_width, z)])  # fmt: skip


def _loft(rings: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(normal, quad) of the side faces between consecutive rings, band by band, then the top."""
    centre = np.concatenate(rings).mean(axis=0)
    quads = [np.stack([a[i], a[i - n + 1], b[i - n + 1], b[i]])
             for a, b in zip(rings, rings[1:]) for n in [len(a)] for i in range(n)]  # fmt: skip
    return [(_normal(q, centre), q) for q in [*quads, rings[-1]]]


def _normal(poly: np.ndarray, centre: np.ndarray) -> np.ndarray:
    n = np.cross(poly, np.roll(poly, -1, axis=0)).sum(axis=0)  # Newell's method
    n = n if n @ (poly.mean(axis=0) - centre) >= 0 else -n
    return n / np.linalg.norm(n)


def _sub(face: tuple, s0: float, s1: float, t0: float, t1: float) -> tuple:
    """(normal, quad) of the part [s0, s1] x [t0, t1] of a quad face (s along its base, t up)."""
    normal, (a0, a1, b1, b0) = face

    def at(s: float, t: float) -> np.ndarray:
        return (1 - t) * ((1 - s) * a0 + s * a1) + t * ((1 - s) * b0 + s * b1)

    return normal, np.stack([at(s0, t0), at(s1, t0), at(s1, t1), at(s0, t1)])


def _corners(faces: list) -> np.ndarray:
    return np.unique(np.concatenate([q for _, q in faces]), axis=0)


def _circle(x: float, y: float, z: float, radius: float, upper_half: bool = False) -> np.ndarray:
    a = np.linspace(0, np.pi if upper_half else 2 * np.pi, 11 if upper_half else 20, endpoint=False)
    return np.stack([x + radius * np.cos(a), np.full_like(a, y), z + radius * np.sin(a)], axis=1)


@functools.lru_cache(maxsize=32)
def _car_parts(car: CarSpec) -> tuple[_Part, ...]:
    half_l, half_w, top = car.length / 2, car.width / 2, car.body_top
    body = _loft([
        _ring(half_l - 0.06, half_l - 0.06, half_w - 0.04, car.chamfer, car.clearance),
        _ring(half_l, half_l, half_w, car.chamfer, (car.clearance + top) / 2),
        _ring(half_l - car.nose, half_l - car.tail, half_w - 0.04, 1.2 * car.chamfer, top),
    ])  # fmt: skip
    lights = [(HEADLIGHT, *_sub(body[8], s, s + 0.22, 0.4, 0.85)) for s in (0.04, 0.74)]
    lights += [(TAILLIGHT, *_sub(body[12], s, s + 0.22, 0.45, 0.9)) for s in (0.03, 0.75)]
    lights += [(TRIM, *_sub(body[8], 0.34, 0.66, 0.25, 0.8)), (TRIM, *_sub(body[0], 0.15, 0.85, 0.3, 0.8))]
    parts = [_Part(BODY, _corners(body), body, lights, 0)]

    base_f, base_r, roof_f, roof_r = car.cabin
    cab_w = half_w - 0.07
    cabin = _loft([_rect(base_f, base_r, cab_w, top - 0.01),
                   _rect(roof_f, roof_r, cab_w - 0.09 * car.width, car.roof)])  # fmt: skip
    windows = [(GLASS, *_sub(cabin[0], 0.06, 0.94, 0.1, 0.9)),
               (GLASS, *_sub(cabin[2], 0.08, 0.92, 0.15, 0.88))]  # fmt: skip
    edges = np.linspace(0.05, 0.95, car.side_windows + 1)
    windows += [(GLASS, *_sub(cabin[i], a + 0.02, b - 0.02, 0.14, 0.88))
                for i in (1, 3) for a, b in zip(edges, edges[1:])]  # fmt: skip
    parts.append(_Part(BODY, _corners(cabin), cabin, windows, 0))

    r = car.wheel_radius
    for side in (1, -1):
        out = side * (half_w - 0.01)
        normal = np.array([0.0, side, 0.0])
        for x in car.axles:
            arch = _circle(x, side * (half_w + 0.003), r, 1.12 * r, upper_half=True)
            parts.append(_Part(TRIM, arch, [], [], side))
            tyre = np.concatenate([_circle(x, out, r, r), _circle(x, out - side * car.wheel_width, r, r)])
            rims = [(RIM, normal, _circle(x, out + side * 0.005, r, 0.62 * r)),
                    (TRIM, normal, _circle(x, out + side * 0.01, r, 0.2 * r))]  # fmt: skip
            parts.append(_Part(TYRE, tyre, [(normal, _circle(x, out, r, r))], rims, side))
        if car.mirrors:
            corners = [(x, y, z) for x in (base_f - 0.05, base_f - 0.25)
                       for y in (side * (half_w - 0.05), side * (half_w + 0.18))
                       for z in (top + 0.04, top + 0.2)]  # fmt: skip
            parts.append(_Part(BODY, np.array(corners), [], [], side))
    return tuple(parts)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the hull of (N, 2) points, counter-clockwise, (K, 2)."""
    pts = sorted(map(tuple, points.tolist()))  # by x, then y
    if len(pts) < 3:
        return np.array(pts)

    def chain(seq: list) -> list:
        out: list = []
        for p in seq:
            while len(out) >= 2 and (
                (out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])
            ) <= 0:
                out.pop()
            out.append(p)
        return out

    return np.array(chain(pts)[:-1] + chain(pts[::-1])[:-1])


# --- rendering --------------------------------------------------------------------------------


def _camera(view: int, elevation: float) -> np.ndarray:
    """(3, 3) matrix from the car frame to the camera's (right, up, towards the camera)."""
    yaw, e = np.radians((view - 1) * 360 / N_VIEWS), np.radians(elevation)
    turn = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    axes = np.array([[0, 1, 0], [-np.sin(e), 0, np.cos(e)], [np.cos(e), 0, np.sin(e)]])
    return axes @ turn


def _placement(car: CarSpec, height: int, width: int) -> tuple[float, float, float]:
    """Pixels per metre and the (column, row) of the car's ground centre."""
    scale = car.fill * min(width, 1.5 * height) / car.length
    return scale, car.centre[0] * width, car.centre[1] * height


def _project(points: np.ndarray, cam: np.ndarray, scale: float, col: float, row: float):
    p = points @ cam.T
    return np.stack([col + scale * p[:, 0], row - scale * p[:, 1]], axis=1)  # (N, 2) x, y


def render_view(
    car: CarSpec, view: int, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One photo of ``car`` from ``view`` (1 front, 5 side, 9 rear, 13 other side).

    ``rng`` adds what changes from shot to shot: camera shake, exposure, sensor noise.

    Returns:
        The image, uint8 (H, W, 3), and the mask, uint8 (H, W) in {0, 1}.
    """
    _check_size(height, width)
    if not 1 <= view <= N_VIEWS:
        raise ValueError(f"view must be 1..{N_VIEWS} (01 front, 05 side, 09 rear), got {view}")
    cam = _camera(view, car.elevation)
    scale, col, row = _placement(car, height, width)
    col += rng.normal(0, 0.004) * width
    row += rng.normal(0, 0.003) * height
    image = _studio(car, height, width).astype(np.float32)
    _cast_shadow(image, car, cam, scale, col, row)
    mask = _draw_car(image, car, cam, scale, col, row)
    image *= rng.uniform(0.96, 1.04)  # exposure
    noise = rng.standard_normal((height, width, 1), dtype=np.float32)  # JPEG drops chroma noise
    image += noise * rng.uniform(1.5, 4.0) + 0.5  # + 0.5: round, not truncate, below
    return np.clip(image, 0, 255, out=image).astype(np.uint8), mask


@functools.lru_cache(maxsize=4)
def _studio(car: CarSpec, height: int, width: int) -> np.ndarray:
    """The empty studio, uint8 (H, W, 3), read-only: shared by the car's 16 views."""
    rng = np.random.default_rng(car.studio_seed)
    tint = rng.uniform(-12, 12, 3)
    wall = np.array([rng.uniform(165, 250), rng.uniform(185, 250)])[:, None] + tint
    floor = np.array([rng.uniform(120, 240), rng.uniform(95, 230)])[:, None] + tint
    horizon, soft = rng.uniform(0.35, 0.6), rng.uniform(0.01, 0.12)
    y = (np.arange(height)[:, None] + 0.5) / height
    t_wall, t_floor = np.clip(y / horizon, 0, 1), np.clip((y - horizon) / (1 - horizon), 0, 1)
    blend = np.clip((y - horizon) / soft + 0.5, 0, 1)  # a curved cyclorama, not a sharp corner
    column = ((1 - t_wall) * wall[0] + t_wall * wall[1]) * (1 - blend)
    column += ((1 - t_floor) * floor[0] + t_floor * floor[1]) * blend  # (H, 3)
    x = (np.arange(width) + 0.5) / width
    vignette = 1 - rng.uniform(0, 0.15) * (2 * x - 1) ** 2
    img = Image.fromarray(np.clip(column[:, None] * vignette[:, None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    scale, col, row = _placement(car, height, width)
    rx = 0.62 * car.length * scale
    ry = rx * np.sin(np.radians(car.elevation))
    tone = column[min(int(row), height - 1)] * rng.uniform(0.85, 1.08)
    draw.ellipse([col - rx, row - ry, col + rx, row + ry], fill=_rgb(tone),
                 outline=_rgb(tone * 0.7), width=max(1, width // 240))  # fmt: skip
    for _ in range(rng.integers(3, 12)):
        _draw_clutter(draw, rng, height, width, horizon, car.color)
    out = np.array(img)
    out.setflags(write=False)
    return out


def _draw_clutter(draw, rng, height: int, width: int, horizon: float, car_color) -> None:
    """One studio object behind the car: a light stand, a box, a lamp, a cable or a panel."""
    kind, x = rng.integers(5), rng.uniform(-0.05, 1.0) * width
    floor_y = rng.uniform(horizon, 1.0) * height
    w, h = rng.uniform(0.03, 0.2) * width, rng.uniform(0.05, 0.35) * height
    if kind == 0:  # light stand: a pole with a soft box on top
        pole, top = max(1.0, rng.uniform(0.004, 0.012) * width), rng.uniform(0.05, 0.4) * height
        draw.rectangle([x, top, x + pole, floor_y], fill=_clutter_color(rng, car_color))
        draw.rectangle([x - w / 2, top - h / 2, x + w / 2, top], fill=_clutter_color(rng, car_color))
    elif kind == 1:  # box standing on the floor
        draw.rectangle([x, floor_y - h, x + w, floor_y], fill=_clutter_color(rng, car_color))
    elif kind == 2:  # lamp or reflector
        y = rng.uniform(0.0, 0.9) * height
        draw.ellipse([x, y, x + w / 2, y + w / 2], fill=_clutter_color(rng, car_color))
    elif kind == 3:  # cable across the floor
        ys = rng.uniform(horizon, 1.0, 4) * height
        xs = np.sort(rng.uniform(-0.1, 1.1, 4)) * width
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=_clutter_color(rng, car_color),
                  width=max(1, int(rng.uniform(0.002, 0.008) * width)))  # fmt: skip
    else:  # tall light panel or flag, often as pale as a white car
        tone = rng.uniform(200, 250) + rng.uniform(-6, 6, 3)
        draw.rectangle([x, floor_y - 2.5 * h, x + w, floor_y], fill=_rgb(tone))


def _clutter_color(rng: np.random.Generator, car_color) -> tuple[int, int, int]:
    pick = rng.random()
    if pick < 0.35:  # close to the car's colour
        return _rgb(np.array(car_color) + rng.uniform(-18, 18, 3))
    if pick < 0.7:  # a grey
        return _rgb(rng.uniform(15, 250) + rng.uniform(-8, 8, 3))
    return _rgb(rng.uniform(0, 255, 3))


def _rgb(values) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(v))) for v in values)


def _cast_shadow(image: np.ndarray, car: CarSpec, cam, scale: float, col: float, row: float):
    """Darken ``image`` in place under the car: its footprint, blurred at 1/4 size."""
    q, (height, width) = 4, image.shape[:2]
    foot = _ring(0.53 * car.length, 0.53 * car.length, 0.56 * car.width, car.chamfer, 0.0)
    poly, blur = _project(foot, cam, scale, col, row), 0.04 * car.length * scale
    x0, y0 = np.maximum(np.floor(poly.min(axis=0) - 3 * blur), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(poly.max(axis=0) + 3 * blur), (width, height)).astype(int)
    if x1 <= x0 or y1 <= y0:
        return
    small = Image.new("L", (-(-(x1 - x0) // q), -(-(y1 - y0) // q)))
    ImageDraw.Draw(small).polygon(((poly - (x0, y0)) / q).ravel().tolist(), fill=255)
    small = small.filter(ImageFilter.GaussianBlur(blur / q))
    shade = np.asarray(small.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR), np.float32)
    image[y0:y1, x0:x1] *= (1 - shade * (car.shadow / 255))[..., None]


def _draw_car(image: np.ndarray, car: CarSpec, cam, scale: float, col: float, row: float):
    """Composite the car onto ``image`` (float32, in place); return its uint8 {0, 1} mask.

    The parts are drawn at 2x in painter's order (far-side wheels, body, cabin, near side) into a
    flat-shaded colour image, a gloss map and a coverage map, each box-downsampled by Pillow.
    """
    ss_args = (cam, _SS * scale, _SS * col, _SS * row)
    parts = _car_parts(car)
    near = {p.side: (cam @ (0, p.side, 0))[2] > 0.1 for p in parts}
    order = [p for p in parts if p.side and not near[p.side]] + [p for p in parts if not p.side]
    order += [p for p in parts if p.side and near[p.side]]
    shapes = []  # (label, shade, (K, 2) polygon in supersampled pixels)
    for part in order:
        shapes.append((part.label, 0.8, _convex_hull(_project(part.points, *ss_args))))
        for label, normal, poly in [(part.label, *f) for f in part.faces] + part.decals:
            n = cam @ normal
            if n[2] > 1e-3:  # the face looks at the camera
                shade = 0.5 + 0.55 * max(0.0, n @ _LIGHT)
                shapes.append((label, shade, _project(poly, *ss_args)))

    height, width = image.shape[:2]
    pts = np.concatenate([s[2] for s in shapes])
    x0, y0 = (np.floor(pts.min(axis=0) / _SS).astype(int) - 1).clip(0)  # crop, output pixels
    x1 = min(width, int(np.ceil(pts[:, 0].max() / _SS)) + 1)
    y1 = min(height, int(np.ceil(pts[:, 1].max() / _SS)) + 1)
    mask = np.zeros((height, width), np.uint8)
    if x1 <= x0 or y1 <= y0:  # the car is off the picture
        return mask
    size = (_SS * (x1 - x0), _SS * (y1 - y0))
    colour, gloss, cover = Image.new("RGB", size), Image.new("L", size), Image.new("L", size)
    draws = ImageDraw.Draw(colour), ImageDraw.Draw(gloss), ImageDraw.Draw(cover)
    lut = np.array([(0, 0, 0), car.color, (18, 22, 28), (18, 18, 20), car.rim_color,
                    (235, 238, 242), (170, 16, 18), (30, 30, 33)])  # fmt: skip
    shine = (0, 255, 180, 25, 130, 80, 80, 25)  # how glossy each label is
    for label, shade, poly in shapes:
        xy = (poly - (_SS * x0, _SS * y0)).ravel().tolist()
        draws[0].polygon(xy, fill=_rgb(lut[label] * shade))
        draws[1].polygon(xy, fill=shine[label])
        draws[2].polygon(xy, fill=_SS * _SS)  # so the box filter counts covered subpixels

    rgb = np.asarray(colour.reduce(_SS), np.float32)
    covered = np.asarray(cover.reduce(_SS))  # (h, w): subpixels out of 4 the car covers
    h, w = covered.shape
    rows, cols = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)
    # A soft-box reflection along the shoulder line of the side facing the camera.
    side = max(parts[0].faces[10], parts[0].faces[14], key=lambda f: (cam @ f[0])[2])
    _, belt = _sub(side, 0, 1, 0.8, 0.8)
    (xa, ya), (xb, yb) = _project(belt[:2], cam, scale, col - x0, row - y0)
    slope = np.clip((yb - ya) / (xb - xa), -1, 1) if abs(xb - xa) > 1 else 0.0
    band = np.exp(-(((rows - ya - slope * (cols - xa)) / (0.06 * h)) ** 2))
    rgb *= (1.08 - 0.3 * rows / h)[..., None]  # light falls off towards the floor
    rgb += (band * car.gloss * np.asarray(gloss.reduce(_SS), np.float32))[..., None]
    region = image[y0:y1, x0:x1]
    region *= (1 - covered / _SS**2)[..., None]
    region += rgb
    mask[y0:y1, x0:x1] = covered >= _SS**2 / 2
    return mask


# --- the data set on disk ---------------------------------------------------------------------


def generate_dataset(
    root: str | Path, n_cars: int = 20, height: int = 320, width: int = 480, seed: int = 0
) -> Path:
    """Write a fresh synthetic set of ``n_cars`` x 16 views into ``root``; return ``root``.

    ``root`` must not exist or be empty. The set is written into the sibling folder
    ``.{root.name}.tmp-<random>`` and moved into place at the end, so a killed run never leaves a
    half-written set at ``root``. The default 320 x 480 is a quarter of Carvana's 1280 x 1918.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: ``root`` exists and is not an empty folder.
    """
    params = _params(n_cars, height, width, seed)
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} already exists and is not an empty folder; pick another root (or use "
            "ensure_dataset to reuse a set generated with the same parameters)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        start = time.perf_counter()
        _write_dataset(tmp, **params)
        if root.exists():
            root.rmdir()  # empty, checked above; rmdir refuses to delete anything else
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Generated %d synthetic cars (%d images) at %s in %.1f s", n_cars,
                n_cars * N_VIEWS, root, time.perf_counter() - start)  # fmt: skip
    return root


def ensure_dataset(
    root: str | Path, n_cars: int = 20, height: int = 320, width: int = 480, seed: int = 0
) -> Path:
    """Reuse the synthetic set at ``root`` if it was made with these parameters, else generate it.

    ``root`` is generated when it does not exist or is an empty folder. Nothing is ever
    overwritten or deleted.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: ``root`` holds something else: other files, or a set generated with
            other parameters.
    """
    params = _params(n_cars, height, width, seed)
    root = Path(root)
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return generate_dataset(root, n_cars, height, width, seed)
    if not root.is_dir():
        raise FileExistsError(f"{root} is a file, not a data set folder; pick another root")
    marker = root / "generator.json"
    if not marker.is_file():
        found = ", ".join(sorted(p.name for p in root.iterdir())[:5])
        raise FileExistsError(
            f"{root} holds other files ({found}, ...) and no generator.json, so it is not a "
            "synthetic set made by carseg; pick another root, or delete it if it is not needed"
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
    logger.info("Reusing the synthetic set at %s (%s)", root, params)
    return root


def _params(n_cars: int, height: int, width: int, seed: int) -> dict:
    """Validate the arguments; return them as generator.json records them."""
    hints = {
        "n_cars": (1, "the number of cars; each is photographed from 16 views"),
        "height": (MIN_SIZE, "image height in pixels, e.g. 320 (Carvana's 1280 / 4)"),
        "width": (MIN_SIZE, "image width in pixels, e.g. 480 (Carvana's 1918 / 4)"),
        "seed": (0, "a non-negative integer seed"),
    }
    values = {"n_cars": n_cars, "height": height, "width": width, "seed": seed}
    for name, value in values.items():
        low, hint = hints[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}: pass {hint}")
    return {"format": "carseg.synthetic", "format_version": FORMAT_VERSION,
            **{k: int(v) for k, v in values.items()}}  # fmt: skip


def _check_size(height: int, width: int) -> None:
    _params(1, height, width, 0)


def _write_dataset(
    folder: Path, n_cars: int, height: int, width: int, seed: int, **marker: object
) -> None:
    (folder / "train").mkdir()
    (folder / "train_masks").mkdir()
    rles, cars = {}, {}
    for index in range(n_cars):
        rng = np.random.default_rng([seed, index])
        car = sample_car(rng)
        while car.car_id in cars:  # 48 random bits: a clash is rare but must not merge two cars
            car = dataclasses.replace(car, car_id=_car_id(rng))
        cars[car.car_id] = car
        for view in range(1, N_VIEWS + 1):
            view_rng = np.random.default_rng([seed, index, view])
            image, mask = render_view(car, view, height, width, view_rng)
            name = f"{car.car_id}_{view:02d}"
            quality = int(view_rng.integers(70, 96))
            Image.fromarray(image).save(folder / "train" / f"{name}.jpg", quality=quality)
            gif = Image.frombytes("P", (width, height), mask.tobytes())
            gif.putpalette([0, 0, 0, 255, 255, 255])
            gif.save(folder / "train_masks" / f"{name}_mask.gif")
            rles[f"{name}.jpg"] = rle_encode(mask)
    write_rle_csv(folder / "train_masks.csv", sorted(rles.items()))
    with (folder / "metadata.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "year", "make", "model", "color"])
        writer.writerows([c.car_id, c.year, c.make, c.model, c.color_name]
                         for _, c in sorted(cars.items()))  # fmt: skip
    params = {**marker, "n_cars": n_cars, "height": height, "width": width, "seed": seed}
    # Written last: its presence marks a complete set.
    (folder / "generator.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
