"""Per-image preprocessing: grayscale to 3 channels, resize, optional augmentation, ImageNet
normalisation. Works on uint8 numpy arrays, since images are decoded once up front."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tuner._torchvision import torchvision

v2 = torchvision.transforms.v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


def build_transform(image_size: int, *, augment: bool, resize_size: int | None = None
                    ) -> Callable[[np.ndarray], torch.Tensor]:
    """The transform of one split: augmentation only where ``augment`` (the training split).

    Without ``resize_size`` the image is resized to ``image_size`` square. With it, the shorter side is
    resized to ``resize_size`` (aspect ratio kept) and the centre ``image_size`` square is cropped, the
    torchvision ImageNet recipe the fine-tuning-strategies paper uses (232 or 256, then 224)."""
    steps: list[Callable] = [to_chw_tensor]
    if resize_size is None:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
    else:
        steps += [v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size)]
    if augment:
        steps.append(v2.RandomAffine(degrees=AUGMENT_ROTATION_DEG,
                                     translate=(AUGMENT_SHIFT, AUGMENT_SHIFT),
                                     shear=AUGMENT_SHEAR_DEG))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)
