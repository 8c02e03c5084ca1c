"""The statistics carseg normalises RGB images with: ImageNet's per-channel mean and standard
deviation of pixel values in [0, 1] (torchvision's numbers).

Here, below the stages, so that the data pipeline that applies them
(``carseg.data.transforms``) and a network that undoes them to apply its own input scaling
(``carseg.models.efficientnet_unet``) read the same numbers: data and models may not import each
other.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
