"""Per-image preprocessing: grayscale to 3 channels, resize, optional augmentation, normalisation with
the mean and std the starting weights expect. Works on uint8 numpy arrays, since images are decoded
once up front. A trial's own loaders prepare each split once and augment batched
(``tuner.data.batches``), with the same resize steps (``resize_steps``) and the same affine family;
this per-image form serves pretraining, exported models and ensembles, and is the reference those
loaders are tested against.

Each transform declares whether it draws random numbers (``ImageTransform.random``): code that would
compute an image's result once and reuse it (the frozen-prefix feature cache) asks the transform,
instead of guessing from a flag or from names.
"""

from __future__ import annotations

import numpy as np
import torch

from tuner._torchvision import torchvision
from tuner.spec import IMAGENET_PREPROCESSING, Preprocessing

v2 = torchvision.transforms.v2

IMAGENET_MEAN = IMAGENET_PREPROCESSING.mean
IMAGENET_STD = IMAGENET_PREPROCESSING.std
# The ConvSkip paper's augmentation: small rotations, shifts and shears.
AUGMENT_ROTATION_DEG = 15.0
AUGMENT_SHIFT = 0.1
AUGMENT_SHEAR_DEG = 10.0


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) uint8 to a (3, H, W) uint8 tensor; grayscale is repeated to 3 channels
    because ImageNet-pretrained trunks expect colour input."""
    tensor = torch.tensor(image)  # copies: arrays from Ray's object store are read-only
    if tensor.ndim == 2:
        return tensor.unsqueeze(0).expand(3, -1, -1).contiguous()
    return tensor.permute(2, 0, 1).contiguous()


class ImageTransform:
    """A uint8 image to a normalised float tensor; ``random`` says whether calling it twice on one image
    can give two results (augmentation), so a caller may cache the output exactly when it is False."""

    def __init__(self, steps: list, *, random: bool) -> None:
        self.pipeline = v2.Compose(steps)
        self.random = random

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.pipeline(image)


def resize_steps(image_size: int, resize_size: int | None, interpolation: str) -> list:
    """The deterministic geometry of every split: a square resize to ``image_size``, or (with
    ``resize_size``) the shorter side to ``resize_size`` and the centre ``image_size`` square. One
    definition for the per-image transform and for images prepared once per trial
    (``tuner.data.batches``), so that both give the same pixels."""
    mode = v2.InterpolationMode(interpolation)
    if resize_size is None:
        return [v2.Resize((image_size, image_size), interpolation=mode, antialias=True)]
    return [v2.Resize(resize_size, interpolation=mode, antialias=True), v2.CenterCrop(image_size)]


def build_transform(image_size: int, *, augment: bool, resize_size: int | None = None,
                    preprocessing: Preprocessing = IMAGENET_PREPROCESSING) -> ImageTransform:
    """The transform of one split: augmentation only where ``augment`` (the training split).

    Without ``resize_size`` the image is resized to ``image_size`` square. With it, the shorter side is
    resized to ``resize_size`` (aspect ratio kept) and the centre ``image_size`` square is cropped, the
    torchvision ImageNet recipe the fine-tuning-strategies paper uses (232 or 256, then 224). The
    normalisation is ``preprocessing``'s: that of the weights the trunk starts from."""
    steps: list = [to_chw_tensor, *resize_steps(image_size, resize_size, preprocessing.interpolation)]
    if augment:
        steps.append(v2.RandomAffine(degrees=AUGMENT_ROTATION_DEG,
                                     translate=(AUGMENT_SHIFT, AUGMENT_SHIFT),
                                     shear=AUGMENT_SHEAR_DEG))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocessing.mean, preprocessing.std)]
    return ImageTransform(steps, random=augment)
