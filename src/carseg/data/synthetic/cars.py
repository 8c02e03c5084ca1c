"""The synthetic cars: their random specification and their 3-D shape as convex parts.

Each car is a small 3-D model (chamfered lower body, cabin frustum with inset windows, wheels,
mirrors) in the car frame (x forward, y left, z up, metres); ``carseg.data.synthetic.render``
turns it on the turntable and draws it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import numpy as np

N_VIEWS = 16  # 22.5 degrees apart
BODY, GLASS, TYRE, RIM, HEADLIGHT, TAILLIGHT, TRIM = range(1, 8)  # part labels; 0 is background

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


def _rgb(values) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(v))) for v in values)
