"""carseg: U-Net car segmentation on Carvana-style photos, with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
