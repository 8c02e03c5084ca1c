"""Carvana-like synthetic data: cars on a studio turntable, written in Kaggle's on-disk layout::

    train/<car>_<view>.jpg              RGB JPEG; car = 12 lowercase hex digits, view = 01..16
    train_masks/<car>_<view>_mask.gif   palette GIF of the same size, pixel values {0, 1}
    train_masks.csv                     img,rle_mask (``carseg.data.rle``), a row per image, sorted
    metadata.csv                        id,year,make,model,color (invented), one row per car
    generator.json                      the generation parameters; written last

``cars`` specifies and shapes the cars, ``render`` photographs them, ``writer`` writes the set.
Each car is a small 3-D model (chamfered lower body, cabin frustum with inset windows, wheels,
mirrors) turned 22.5 degrees per view (01 front, 05 side, 09 rear, 13 other side), projected
orthographically from a slightly raised camera and drawn part by part as convex hulls at 2x, then
box-downsampled: the mask (coverage >= 0.5) lines up with the anti-aliased car. The studio (wall
and floor gradients, turntable, soft shadow, clutter in colours close to the car's) defeats colour
thresholds. Car ``i`` comes from ``np.random.default_rng([seed, i])``, its view ``v`` from
``default_rng([seed, i, v])``: equal arguments give byte-identical files (same Pillow and libjpeg).
"""

from carseg.data.synthetic.cars import N_VIEWS, CarSpec, sample_car
from carseg.data.synthetic.render import render_view
from carseg.data.synthetic.writer import FORMAT_VERSION, ensure_dataset, generate_dataset

__all__ = [
    "FORMAT_VERSION",
    "N_VIEWS",
    "CarSpec",
    "ensure_dataset",
    "generate_dataset",
    "render_view",
    "sample_car",
]
