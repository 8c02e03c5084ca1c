"""carseg: U-Net car segmentation on Carvana-style photos, with PyTorch Lightning and Hydra."""

import os

# albumentations asks PyPI for a newer version when it is imported, unless told not to: a library
# should not reach the network on import (and this project's machines have none). Set here, once,
# before any carseg module imports it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
