"""Drawing a car on the studio turntable: camera, studio, shadow, anti-aliased car, and its mask.

Views are turned 22.5 degrees apart (01 front, 05 side, 09 rear, 13 other side), projected
orthographically from a slightly raised camera; parts are drawn as convex hulls at 2x, then
box-downsampled, so the mask (coverage >= 0.5) lines up with the anti-aliased car. The studio (wall
and floor gradients, turntable, soft shadow, clutter in colours close to the car's) defeats colour
thresholds.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from carseg.data.synthetic.cars import (
    N_VIEWS,
    CarSpec,
    _car_parts,
    _rgb,
    _ring,
    _sub,
)

MIN_SIZE = 32
_SS = 2  # supersampling factor
_LIGHT = np.array([-0.35, 0.75, 0.55]) / np.linalg.norm([-0.35, 0.75, 0.55])  # camera frame


def check_image_size(height: int, width: int) -> None:
    """Raises ValueError unless both are integers of at least ``MIN_SIZE`` pixels."""
    for name, value, example in (("height", height, 320), ("width", width, 480)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < MIN_SIZE:
            raise ValueError(
                f"{name} must be an integer >= {MIN_SIZE}, got {value!r}: pass the image {name} "
                f"in pixels, e.g. {example} (a quarter of Carvana's)"
            )


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
    check_image_size(height, width)
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
