"""Carvana-like synthetic data: cars on a studio turntable, written in Kaggle's on-disk layout::

    train/<car>_<view>.jpg              RGB JPEG; car = 12 lowercase hex digits, view = 01..16
    train_masks/<car>_<view>_mask.gif   palette GIF of the same size, pixel values {0, 1}
    train_masks.csv                     img,rle_mask (``carseg.rle``), one row per image, sorted
    metadata.csv                        id,year,make,model,color (invented), one row per car
    generator.json                      the generation parameters; written last

Each car is a small 3-D model (chamfered lower body, cabin frustum with inset windows, wheels,
mirrors) turned 22.5 degrees per view (01 front, 05 side, 09 rear, 13 other side), projected
orthographically from a slightly raised camera and drawn part by part as convex hulls at 2x, then
box-downsampled: the mask (coverage >= 0.5) lines up with the anti-aliased car. The studio (wall
and floor gradients, turntable, soft shadow, clutter in colours close to the car's) defeats colour
thresholds. Car ``i`` comes from ``np.random.default_rng([seed, i])``, its view ``v`` from
``default_rng([seed, i, v])``: equal arguments give byte-identical files (same Pillow and libjpeg).
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

FORMAT_VERSION = 1  # bump when the rendering changes: a set made by another version is refused
N_VIEWS = 16  # 22.5 degrees apart
MIN_SIZE = 32
_SS = 2  # supersampling factor
BODY, GLASS, TYRE, RIM, HEADLIGHT, TAILLIGHT, TRIM = range(1, 8)  # part labels; 0 is background
_LIGHT = np.array([-0.35, 0.75, 0.55]) / np.linalg.norm([-0.35, 0.75, 0.55])  # camera frame

# weight, then (low, high) in metres of: length, width, clearance, body top, roof, hood setback,
# trunk setback, wheel radius; cabin base front/rear and roof front/rear as fractions of the length
# from the nose; side windows.
_BODY_TYPES = {
    "sedan": (0.35, (4.4, 5.0), (1.75, 1.9), (0.14, 0.2), (0.82, 0.95), (1.38, 1.5), (0.15, 0.35),
              (0.1, 0.25), (0.3, 0.34), (0.3, 0.78, 0.47, 0.68), 2),
    "hatchback": (0.2, (3.8, 4.3), (1.7, 1.82), (0.14, 0.19), (0.82, 0.92), (1.42, 1.52),
                  (0.15, 0.3), (0.02, 0.06), (0.29, 0.33), (0.32, 0.97, 0.48, 0.9), 2),
    "suv": (0.25, (4.4, 4.9), (1.85, 2.0), (0.2, 0.28), (1.0, 1.12), (1.65, 1.8), (0.1, 0.25),
            (0.02, 0.06), (0.35, 0.4), (0.28, 0.98, 0.42, 0.94), 3),
    "van": (0.1, (4.6, 5.2), (1.9, 2.0), (0.16, 0.22), (1.0, 1.1), (1.9, 2.1), (0.05, 0.15),
            (0.01, 0.04), (0.32, 0.36), (0.14, 0.99, 0.24, 0.98), 3),
    "pickup": (0.1, (5.0, 5.6), (1.9, 2.02), (0.24, 0.32), (1.05, 1.15), (1.8, 1.95), (0.1, 0.2),
               (0.02, 0.06), (0.36, 0.42), (0.3, 0.6, 0.4, 0.59), 1),
}  # fmt: skip
# Carvana's stock is mostly white, silver, grey and black: hard on a light studio background.
_COLORS = {"white": (236, 236, 233), "silver": (192, 194, 198), "grey": (118, 120, 124),
           "black": (24, 24, 27), "red": (160, 24, 30), "blue": (32, 62, 140),
           "dark green": (28, 68, 46), "beige": (206, 190, 160),
           "dark blue": (24, 32, 66)}  # fmt: skip
_COLOR_WEIGHTS = (0.22, 0.2, 0.14, 0.14, 0.08, 0.08, 0.05, 0.05, 0.04)
_MAKES = ("Norvik", "Castellan", "Auberon", "Kestrel", "Maruna", "Vantor", "Solenne", "Brask")
_MODELS = ("Aurel", "Brisk", "Calyx", "Dune", "Ember", "Fjord", "Glint", "Halcyon", "Isla", "Lumo")


@dataclasses.dataclass(frozen=True)
class CarSpec:
    """One car and its photo session (studio, camera, framing: shared by its 16 views).

    Lengths in metres in the car frame: x forward, y to the car's left, z up, origin on the ground
    under the car's centre. Colours are RGB 0-255.
    """

    car_id: str  # 12 lowercase hex digits
    body_type: str  # sedan, hatchback, suv, van or pickup
    length: float
    width: float  # without mirrors
    clearance: float  # ground to the bottom of the body
    body_top: float  # ground to the hood and trunk lid
    roof: float
    cabin: tuple[float, float, float, float]  # x of the cabin's base front/rear, roof front/rear
    nose: float  # setback of the hood's front edge from the bumper
    tail: float  # setback of the trunk's rear edge
    chamfer: float  # plan-view corner cut
    wheel_radius: float
    wheel_width: float
    axles: tuple[float, float]  # x of the front and rear axles
    side_windows: int
    mirrors: bool
    color_name: str
    color: tuple[int, int, int]
    rim_color: tuple[int, int, int]
    gloss: float  # strength of reflections, 0-1
    elevation: float  # camera elevation, degrees
    fill: float  # side-view length as a fraction of the image width
    centre: tuple[float, float]  # column and row of the car's ground centre, fractions of the image
    shadow: float  # darkness of the shadow under the car, 0-1
    studio_seed: int
    year: int
    make: str
    model: str


def sample_car(rng: np.random.Generator) -> CarSpec:
    """Draw a car (id, body type, dimensions, colour, studio and framing) from ``rng``."""

    def u(low: float, high: float) -> float:
        return round(float(rng.uniform(low, high)), 4)

    weights = np.array([t[0] for t in _BODY_TYPES.values()])
    body_type = list(_BODY_TYPES)[rng.choice(len(weights), p=weights / weights.sum())]
    _, *ranges, cabin, windows = _BODY_TYPES[body_type]
    names = ("length", "width", "clearance", "body_top", "roof", "nose", "tail", "wheel_radius")
    dims = {name: u(*r) for name, r in zip(names, ranges, strict=True)}
    length = dims["length"]
    cabin = np.clip(np.array(cabin) + rng.uniform(-0.02, 0.02, 4), 0.0, 0.995)
    weights = np.array(_COLOR_WEIGHTS)
    color_name = list(_COLORS)[rng.choice(len(_COLORS), p=weights / weights.sum())]
    color = np.clip(np.array(_COLORS[color_name]) + rng.integers(-6, 7, 3), 0, 255)
    rim = u(165, 215) if rng.random() < 0.7 else u(45, 80)
    return CarSpec(
        car_id=rng.bytes(6).hex(),
        body_type=body_type,
        **dims,
        cabin=tuple(round(float(length * (0.5 - f)), 4) for f in cabin),
        chamfer=u(0.12, 0.3),
        wheel_width=u(0.2, 0.28),
        axles=(round(length * u(0.29, 0.32), 4), round(-length * u(0.27, 0.31), 4)),
        side_windows=windows,
        mirrors=bool(rng.random() < 0.85),
        color_name=color_name,
        color=_rgb(color),
        rim_color=_rgb(rim + rng.integers(-4, 5, 3)),
        gloss=u(0.15, 0.5),
        elevation=u(5.0, 15.0),
        fill=u(0.6, 0.8),
        centre=(u(0.46, 0.54), u(0.74, 0.8)),
        shadow=u(0.3, 0.6),
        studio_seed=int(rng.integers(2**31)),
        year=int(rng.integers(2001, 2018)),
        make=_MAKES[rng.integers(len(_MAKES))],
        model=_MODELS[rng.integers(len(_MODELS))],
    )


# --- geometry: the car as convex parts in the car frame -------------------------------------------


class _Part(NamedTuple):
    label: int
    points: np.ndarray  # (N, 3): the part is drawn as the convex hull of their projection
    faces: list  # [(outward normal, polygon)]: shading, drawn where they face the camera
    decals: list  # [(label, normal, polygon)]: windows, lights, rims on a face of the part
    side: int  # +1/-1 on the car's left/right, 0 in the middle


def _ring(front: float, rear: float, half_width: float, chamfer: float, z: float) -> np.ndarray:
    """Plan-view octagon at height z, counter-clockwise, (8, 3): edge 0 front, 4 rear, 2/6 sides."""
    f, r, w, c = front, -rear, half_width, chamfer
    xy = [(f, -w + c), (f, w - c), (f - c, w), (r + c, w), (r, w - c), (r, -w + c), (r + c, -w)]
    return np.array([(x, y, z) for x, y in [*xy, (f - c, -w)]])


def _rect(front: float, rear: float, half_width: float, z: float) -> np.ndarray:
    """Plan-view rectangle at height z, counter-clockwise, (4, 3): edge 0 front, 2 rear."""
    w = half_width
    return np.array([(front, -w, z), (front, w, z), (rear, w, z), (rear, -w, z)])


def _loft(rings: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(outward normal, quad) of the faces between consecutive rings, band by band, then the top."""
    centre = np.concatenate(rings).mean(axis=0)
    bands = zip(rings, rings[1:], strict=False)
    quads = [q for a, b in bands for q in np.stack([a, np.roll(a, -1, 0), np.roll(b, -1, 0), b], 1)]
    faces = []
    for poly in [*quads, rings[-1]]:
        n = np.cross(poly, np.roll(poly, -1, axis=0)).sum(axis=0)  # Newell's method
        faces.append((n / np.linalg.norm(n) * np.sign(n @ (poly.mean(axis=0) - centre)), poly))
    return faces


def _sub(face: tuple, s0: float, s1: float, t0: float, t1: float) -> tuple:
    """(normal, quad) of the part [s0, s1] x [t0, t1] of a quad face (s along its base, t up)."""
    normal, (a0, a1, b1, b0) = face

    def at(s: float, t: float) -> np.ndarray:
        return (1 - t) * ((1 - s) * a0 + s * a1) + t * ((1 - s) * b0 + s * b1)

    return normal, np.stack([at(s0, t0), at(s1, t0), at(s1, t1), at(s0, t1)])


def _circle(x: float, y: float, z: float, radius: float, upper_half: bool = False) -> np.ndarray:
    """(N, 3) points of a circle (or its upper half) in the plane y = y, centred at (x, z)."""
    a = np.linspace(0, np.pi, 11) if upper_half else np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return np.stack([x + radius * np.cos(a), np.full_like(a, y), z + radius * np.sin(a)], axis=1)


@functools.lru_cache(maxsize=32)
def _car_parts(car: CarSpec) -> tuple[_Part, ...]:
    """Lower body, cabin, wheel arches, wheels and mirrors."""
    half_l, half_w, top = car.length / 2, car.width / 2, car.body_top
    rings = [
        _ring(half_l - 0.06, half_l - 0.06, half_w - 0.04, car.chamfer, car.clearance),
        _ring(half_l, half_l, half_w, car.chamfer, (car.clearance + top) / 2),
        _ring(half_l - car.nose, half_l - car.tail, half_w - 0.04, 1.2 * car.chamfer, top),
    ]
    body = _loft(rings)  # faces 0-7 lower band, 8-15 upper band (8 front, 12 rear), 16 top
    decals = [(HEADLIGHT, *_sub(body[8], s, s + 0.22, 0.4, 0.85)) for s in (0.04, 0.74)]
    decals += [(TAILLIGHT, *_sub(body[12], s, s + 0.22, 0.45, 0.9)) for s in (0.03, 0.75)]
    decals += [
        (TRIM, *_sub(body[8], 0.34, 0.66, 0.25, 0.8)),
        (TRIM, *_sub(body[0], 0.15, 0.85, 0.3, 0.8)),
    ]
    parts = [_Part(BODY, np.concatenate(rings), body, decals, 0)]

    base_f, base_r, roof_f, roof_r = car.cabin
    rings = [_rect(base_f, base_r, half_w - 0.07, top - 0.01),
             _rect(roof_f, roof_r, half_w - 0.07 - 0.09 * car.width, car.roof)]  # fmt: skip
    cabin = _loft(rings)  # faces 0 front, 1 left, 2 rear, 3 right, 4 roof
    windows = [(GLASS, *_sub(cabin[0], 0.06, 0.94, 0.1, 0.9)),
               (GLASS, *_sub(cabin[2], 0.08, 0.92, 0.15, 0.88))]  # fmt: skip
    edges = np.linspace(0.05, 0.95, car.side_windows + 1)
    windows += [(GLASS, *_sub(cabin[i], a + 0.02, b - 0.02, 0.14, 0.88))
                for i in (1, 3) for a, b in zip(edges, edges[1:], strict=False)]  # fmt: skip
    parts.append(_Part(BODY, np.concatenate(rings), cabin, windows, 0))

    r = car.wheel_radius
    for side in (1, -1):
        out, normal = side * (half_w - 0.01), np.array([0.0, side, 0.0])
        for x in car.axles:
            arch = _circle(x, side * (half_w + 0.003), r, 1.12 * r, upper_half=True)
            parts.append(_Part(TRIM, arch, [], [], side))
            rims = [(RIM, normal, _circle(x, out + side * 0.005, r, 0.62 * r)),
                    (TRIM, normal, _circle(x, out + side * 0.01, r, 0.2 * r))]  # fmt: skip
            wall = _circle(x, out, r, r)
            tyre = np.concatenate([wall, wall - (0, side * car.wheel_width, 0)])
            parts.append(_Part(TYRE, tyre, [(normal, wall)], rims, side))
        if car.mirrors:
            box = [(x, side * y, top + z) for x in (base_f - 0.05, base_f - 0.25)
                   for y in (half_w - 0.05, half_w + 0.18) for z in (0.04, 0.2)]  # fmt: skip
            parts.append(_Part(BODY, np.array(box), [], [], side))
    return tuple(parts)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the (K, 2) hull of (N, 2) points, counter-clockwise."""
    pts = sorted(map(tuple, points.tolist()))  # by x, then y

    def half(seq: list) -> list:
        out: list = []
        for x, y in seq:
            while len(out) >= 2 and (
                (out[-1][0] - out[-2][0]) * (y - out[-2][1])
                - (out[-1][1] - out[-2][1]) * (x - out[-2][0])
                <= 0  # not a left turn
            ):
                out.pop()
            out.append((x, y))
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]) if len(pts) > 2 else pts)


# --- rendering ----------------------------------------------------------------------------------


class _Camera(NamedTuple):
    """Orthographic camera from the car frame to pixels."""

    turn: np.ndarray  # (3, 3): rows are the camera's right, up and towards-the-camera axes
    scale: float  # pixels per metre
    col: float  # pixel column and row of the car's ground centre
    row: float

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) car-frame points to (N, 2) pixel (x, y)."""
        p = points @ self.turn.T
        return np.stack([self.col + self.scale * p[:, 0], self.row - self.scale * p[:, 1]], axis=1)

    def zoom(self, k: float) -> _Camera:
        return _Camera(self.turn, k * self.scale, k * self.col, k * self.row)


def _camera(car: CarSpec, view: int, height: int, width: int) -> _Camera:
    yaw, e = np.radians((view - 1) * 360 / N_VIEWS), np.radians(car.elevation)
    turn = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    axes = np.array([[0, 1, 0], [-np.sin(e), 0, np.cos(e)], [np.cos(e), 0, np.sin(e)]])
    scale = car.fill * min(width, 1.5 * height) / car.length
    return _Camera(axes @ turn, scale, car.centre[0] * width, car.centre[1] * height)


def render_view(
    car: CarSpec, view: int, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One photo of ``car`` from ``view`` (1 front, 5 side, 9 rear, 13 other side).

    ``rng`` draws what changes from shot to shot: camera shake, exposure, sensor noise.

    Returns:
        The image, uint8 (H, W, 3), and the car's mask, uint8 (H, W) in {0, 1}.
    """
    _params(1, height, width, 0)
    if not 1 <= view <= N_VIEWS:
        raise ValueError(f"view must be 1..{N_VIEWS} (1 front, 5 side, 9 rear), got {view}")
    cam = _camera(car, view, height, width)
    shake = rng.normal(0, (0.004 * width, 0.003 * height))
    cam = cam._replace(col=cam.col + shake[0], row=cam.row + shake[1])
    image = _studio(car, height, width).astype(np.float32)
    _cast_shadow(image, car, cam)
    mask = _draw_car(image, car, cam)
    image *= rng.uniform(0.96, 1.04)  # exposure
    noise = rng.standard_normal((height, width, 1), dtype=np.float32)  # JPEG drops chroma noise
    image += noise * rng.uniform(1.5, 4.0) + 0.5  # + 0.5 rounds in the cast below
    return np.clip(image, 0, 255, out=image).astype(np.uint8), mask


@functools.lru_cache(maxsize=4)
def _studio(car: CarSpec, height: int, width: int) -> np.ndarray:
    """The empty studio, uint8 (H, W, 3), read-only: the same behind all the car's views."""
    rng = np.random.default_rng(car.studio_seed)
    tint = rng.uniform(-12, 12, 3)
    wall = np.array([rng.uniform(165, 250), rng.uniform(185, 250)])[:, None] + tint
    floor = np.array([rng.uniform(70, 235), rng.uniform(60, 225)])[:, None] + tint
    horizon, soft = rng.uniform(0.35, 0.6), rng.uniform(0.01, 0.12)
    y = (np.arange(height)[:, None] + 0.5) / height
    t_wall, t_floor = np.clip(y / horizon, 0, 1), np.clip((y - horizon) / (1 - horizon), 0, 1)
    blend = np.clip((y - horizon) / soft + 0.5, 0, 1)  # a curved cyclorama, not a sharp corner
    column = ((1 - t_wall) * wall[0] + t_wall * wall[1]) * (1 - blend)
    column += ((1 - t_floor) * floor[0] + t_floor * floor[1]) * blend  # (H, 3)
    vignette = 1 - rng.uniform(0, 0.15) * (2 * (np.arange(width) + 0.5) / width - 1) ** 2
    img = Image.fromarray(np.clip(column[:, None] * vignette[:, None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    cam = _camera(car, 1, height, width)
    rx, tone = 0.62 * car.length * cam.scale, column[min(int(cam.row), height - 1)]
    ry = rx * np.sin(np.radians(car.elevation))
    tone = tone * rng.uniform(0.85, 1.08)
    box = [cam.col - rx, cam.row - ry, cam.col + rx, cam.row + ry]
    draw.ellipse(box, fill=_rgb(tone), outline=_rgb(0.7 * tone), width=max(1, width // 240))
    for _ in range(rng.integers(3, 12)):
        _add_clutter(draw, rng, car.color, height, width, horizon)
    out = np.array(img)
    out.setflags(write=False)
    return out


def _add_clutter(draw, rng, car_color, height: int, width: int, horizon: float) -> None:
    """One studio object behind the car: a light stand, a box, a lamp, a cable or a panel."""
    kind, x, y = rng.integers(5), rng.uniform(-0.05, 1.0) * width, rng.uniform(horizon, 1) * height
    w, h = rng.uniform(0.03, 0.2) * width, rng.uniform(0.05, 0.35) * height
    fill, fill2 = _clutter_color(rng, car_color), _clutter_color(rng, car_color)
    if kind == 0:  # light stand: a pole with a soft box on top
        top = rng.uniform(0.05, 0.4) * height
        draw.rectangle([x, top, x + max(1.0, 0.008 * width), y], fill=fill)
        draw.rectangle([x - w / 2, top - h / 2, x + w / 2, top], fill=fill2)
    elif kind == 1:  # box on the floor
        draw.rectangle([x, y - h, x + w, y], fill=fill)
    elif kind == 2:  # lamp or reflector
        y = rng.uniform(0.0, 0.9) * height
        draw.ellipse([x, y, x + w / 2, y + w / 2], fill=fill)
    elif kind == 3:  # cable across the floor
        xs, ys = np.sort(rng.uniform(-0.1, 1.1, 4)) * width, rng.uniform(horizon, 1, 4) * height
        draw.line(np.stack([xs, ys], 1).ravel().tolist(), fill=fill, width=max(1, width // 160))
    else:  # a tall light panel or flag, as pale as a white car
        draw.rectangle([x, y - 2.5 * h, x + w, y], fill=_rgb(rng.uniform(200, 250, 3)))


def _clutter_color(rng: np.random.Generator, car_color: tuple) -> tuple[int, int, int]:
    """Close to the car's colour, a grey or any colour."""
    pick, grey = rng.random(), rng.uniform(15, 250) + rng.uniform(-8, 8, 3)
    close = np.array(car_color) + rng.uniform(-18, 18, 3)
    return _rgb(close if pick < 0.35 else grey if pick < 0.7 else rng.uniform(0, 255, 3))


def _rgb(values) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(v))) for v in values)


def _cast_shadow(image: np.ndarray, car: CarSpec, cam: _Camera) -> None:
    """Darken ``image`` in place under the car: its footprint, blurred at 1/4 size."""
    q, (height, width) = 4, image.shape[:2]
    foot = _ring(0.53 * car.length, 0.53 * car.length, 0.56 * car.width, car.chamfer, 0.0)
    poly, blur = cam.project(foot), 0.04 * car.length * cam.scale
    x0, y0 = np.maximum(np.floor(poly.min(axis=0) - 3 * blur), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(poly.max(axis=0) + 3 * blur), (width, height)).astype(int)
    if x1 <= x0 or y1 <= y0:
        return
    small = Image.new("L", (-(-(x1 - x0) // q), -(-(y1 - y0) // q)))
    ImageDraw.Draw(small).polygon(((poly - (x0, y0)) / q).ravel().tolist(), fill=255)
    small = small.filter(ImageFilter.GaussianBlur(blur / q)).resize((x1 - x0, y1 - y0))
    image[y0:y1, x0:x1] *= (1 - np.asarray(small, np.float32) * (car.shadow / 255))[..., None]


def _draw_car(image: np.ndarray, car: CarSpec, cam: _Camera) -> np.ndarray:
    """Composite the car onto ``image`` (float32, in place); return its uint8 {0, 1} mask.

    Parts are drawn at 2x in painter's order (far side, middle, near side) into flat-shaded
    colour, gloss and coverage images, which Pillow box-downsamples.
    """
    parts, fine = _car_parts(car), cam.zoom(_SS)
    near = {p.side: (cam.turn @ (0, p.side, 0))[2] > 0.1 for p in parts}
    order = [p for p in parts if p.side and not near[p.side]] + [p for p in parts if not p.side]
    shapes = []  # (label, diffuse shade, glare, (K, 2) polygon in supersampled pixels)
    for part in order + [p for p in parts if p.side and near[p.side]]:
        shapes.append((part.label, 0.8, 0.0, _convex_hull(fine.project(part.points))))
        for label, normal, poly in [(part.label, *f) for f in part.faces] + part.decals:
            n = cam.turn @ normal
            if n[2] > 1e-3:  # faces the camera; faces looking up mirror the bright ceiling
                shade = 0.5 + 0.55 * max(0, n @ _LIGHT)
                shapes.append((label, shade, max(0, n[1]), fine.project(poly)))

    height, width = image.shape[:2]
    pts = np.concatenate([s[-1] for s in shapes]) / _SS
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int) - 1, 0)  # crop, output pixels
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 1, (width, height))
    mask = np.zeros((height, width), np.uint8)
    if x1 <= x0 or y1 <= y0:  # the car is off the picture
        return mask
    size = (_SS * (x1 - x0), _SS * (y1 - y0))
    colour, gloss, cover = Image.new("RGB", size), Image.new("L", size), Image.new("L", size)
    draws = ImageDraw.Draw(colour), ImageDraw.Draw(gloss), ImageDraw.Draw(cover)
    lut = np.array([(0, 0, 0), car.color, (18, 22, 28), (18, 18, 20), car.rim_color,
                    (235, 238, 242), (170, 16, 18), (30, 30, 33)])  # fmt: skip
    shine = (0, 255, 180, 25, 130, 80, 80, 25)  # how glossy each label is
    for label, shade, glare, poly in shapes:
        xy = (poly - (_SS * x0, _SS * y0)).ravel().tolist()
        draws[0].polygon(xy, fill=_rgb(lut[label] * shade + glare * car.gloss * shine[label]))
        draws[1].polygon(xy, fill=shine[label])
        draws[2].polygon(xy, fill=_SS**2)  # so that the box filter counts covered subpixels

    rgb = np.asarray(colour.reduce(_SS), np.float32)  # premultiplied: 0 off the car
    covered = np.asarray(cover.reduce(_SS))  # (h, w): covered subpixels, 0 to 4
    h, w = covered.shape
    rows, cols = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)
    # A soft box's reflection along the shoulder line of the side facing the camera.
    side = max(parts[0].faces[10], parts[0].faces[14], key=lambda f: (cam.turn @ f[0])[2])
    (xa, ya), (xb, yb) = cam.project(_sub(side, 0, 1, 0.8, 0.8)[1][:2]) - (x0, y0)
    slope = np.clip((yb - ya) / (xb - xa), -1, 1) if abs(xb - xa) > 1 else 0.0
    band = np.exp(-(((rows - ya - slope * (cols - xa)) / (0.06 * h)) ** 2))
    rgb *= (1.08 - 0.3 * rows / h)[..., None]  # the light falls off towards the floor
    rgb += (band * car.gloss * np.asarray(gloss.reduce(_SS), np.float32))[..., None]
    region = image[y0:y1, x0:x1]
    region *= (1 - covered / _SS**2)[..., None]
    region += rgb
    mask[y0:y1, x0:x1] = covered >= _SS**2 / 2
    return mask


# --- the data set on disk -----------------------------------------------------------------------


def generate_dataset(
    root: str | Path, n_cars: int = 20, height: int = 320, width: int = 480, seed: int = 0
) -> Path:
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
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        _write_dataset(tmp, params)
        if root.exists():
            root.rmdir()  # empty, as checked above: rmdir refuses to delete anything else
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    logger.info("Generated %d synthetic cars at %s in %.1f s", n_cars, root, seconds)
    return root


def ensure_dataset(
    root: str | Path, n_cars: int = 20, height: int = 320, width: int = 480, seed: int = 0
) -> Path:
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
        return generate_dataset(root, n_cars, height, width, seed)
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
            gif = Image.frombytes("P", (width, height), mask.tobytes())
            gif.putpalette([0, 0, 0, 255, 255, 255])
            gif.save(folder / "train_masks" / f"{name}_mask.gif")
            rles[f"{name}.jpg"] = rle_encode(mask)
    write_rle_csv(folder / "train_masks.csv", sorted(rles.items()))
    with (folder / "metadata.csv").open("w", newline="") as f:
        rows = [(c.car_id, c.year, c.make, c.model, c.color_name) for c in cars.values()]
        csv.writer(f, lineterminator="\n").writerows(
            [("id", "year", "make", "model", "color")] + sorted(rows)
        )
    # Written last: its presence marks a complete set.
    (folder / "generator.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
