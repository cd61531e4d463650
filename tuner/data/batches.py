"""Images prepared once per trial, and augmentation run batched on the trial's device.

The per-image transform (``tuner.data.transforms``) redoes the deterministic resize of every image
every epoch, one image at a time, in the trial's main process, on the CPU. Here the deterministic part
runs once per trial and its result is kept as uint8 at the target size (one channel for grayscale, as
stored; the three identical channels an ImageNet trunk expects are made at batch time). Each batch is
then moved to the trial's device as uint8, augmented there in one call, and normalised on the fly.

- The pixels are the per-image transform's, bit for bit: the same resize steps
  (``resize_steps``), the same uint8 rounding, and the same conversion and normalisation, applied
  element-wise to a batch instead of an image. Unaugmented trials see exactly the numbers they saw.
- The augmentation is torchvision's ``RandomAffine`` family as the per-image transform configures it
  (rotation in ±15°, shift by a whole number of pixels up to 10% of the side, x-shear in ±10°, nearest
  neighbour, zero fill), computed with torchvision's own inverse matrix and sampling grid. Its
  parameters are drawn per image, in the same order and from the same distributions, but from the
  training loader's seeded generator (saved in every checkpoint) instead of the global stream, so a
  resumed trial draws exactly what it would have drawn.
- Everything after the batch is drawn is a tensor operation on the batch's device: no numpy, no
  per-image Python. The only host work per batch is the index gather of uint8 rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from tuner._torchvision import torchvision
from tuner.data.splits import Split
from tuner.data.transforms import AUGMENT_ROTATION_DEG, AUGMENT_SHEAR_DEG, AUGMENT_SHIFT, resize_steps
from tuner.spec import Preprocessing

v2 = torchvision.transforms.v2
PREPARE_CHUNK = 256  # images resized per call when preparing a split


@dataclass(frozen=True)
class PreparedSplit:
    """One split after its deterministic preprocessing: ``images`` (N, C, S, S) uint8 with C = 1
    (grayscale) or 3, and ``labels`` as a batch of the split's labels collates (int64 class indices,
    or the (N, K) multi-label matrix)."""

    images: torch.Tensor
    labels: torch.Tensor


def prepare_split(split: Split, image_size: int, resize_size: int | None, interpolation: str) -> PreparedSplit:
    """Resize (and centre-crop) every image of ``split`` once, with the per-image transform's own steps;
    a split already at the target size is used as it is, without a copy.
    One array of equal-sized images is resized in chunks of ``PREPARE_CHUNK`` (the same pixels: each
    image is resized on its own inside the kernel; a chunk is copied, since arrays from Ray's object
    store are read-only); a list of differently sized images one by one."""
    resize = v2.Compose(resize_steps(image_size, resize_size, interpolation))
    images = split.images
    labels = torch.from_numpy(np.array(split.labels))
    labels = labels if labels.ndim == 2 else labels.long()
    if _at_target_size(images, image_size, resize_size):
        # Resizing to its own size gives the same pixels: keep the split's own array, not a copy. Ray's
        # object store shares it between the trials on a node (read-only, and only ever read here).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            shared = torch.from_numpy(images)
        return PreparedSplit(_channels_first(shared, batched=True), labels)
    if isinstance(images, np.ndarray):
        chunks = [resize(_channels_first(torch.tensor(images[start:start + PREPARE_CHUNK]), batched=True))
                  for start in range(0, len(images), PREPARE_CHUNK)]
    else:
        chunks = [resize(_channels_first(torch.tensor(image), batched=False)).unsqueeze(0) for image in images]
    return PreparedSplit(torch.cat(chunks).contiguous(), labels)


def _at_target_size(images: np.ndarray | list, image_size: int, resize_size: int | None) -> bool:
    """Whether a split is one uint8 array of ``image_size`` squares that the resize steps leave as they
    are (no resize, or a resize of the shorter side to ``image_size`` before the centre crop)."""
    return (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (3, 4)
            and images.shape[1] == images.shape[2] == image_size and resize_size in (None, image_size))


def _channels_first(images: torch.Tensor, *, batched: bool) -> torch.Tensor:
    """Grayscale (…, H, W) to (…, 1, H, W); colour (…, H, W, 3) to (…, 3, H, W). A batch is colour when
    it has 4 dimensions, one image when it has 3."""
    colour = images.ndim == (4 if batched else 3)
    return images.movedim(-1, -3) if colour else images.unsqueeze(-3)


@dataclass(frozen=True)
class AffineParams:
    """One affine draw per image: rotation (degrees), shift (whole pixels, x and y) and x-shear (degrees)."""

    angle: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    shear: torch.Tensor


def draw_affine(n: int, height: int, width: int, generator: torch.Generator) -> AffineParams:
    """``RandomAffine(degrees=15, translate=(0.1, 0.1), shear=10)``'s parameters for ``n`` images, drawn
    as torchvision draws them (per image: angle, x-shift, y-shift, x-shear; each a float32 uniform; the
    shifts rounded to whole pixels), from ``generator``."""
    max_dx, max_dy = AUGMENT_SHIFT * width, AUGMENT_SHIFT * height
    low = torch.tensor([-AUGMENT_ROTATION_DEG, -max_dx, -max_dy, -AUGMENT_SHEAR_DEG])
    draws = torch.empty(n, 4).uniform_(generator=generator) * (-2 * low) + low
    draws = draws.double()
    return AffineParams(draws[:, 0], draws[:, 1].round(), draws[:, 2].round(), draws[:, 3])


def inverse_affine_matrices(params: AffineParams) -> torch.Tensor:
    """(n, 2, 3) float64: torchvision's ``_get_inverse_affine_matrix`` about the image centre, scale 1,
    no y-shear, for every image at once (output pixel to input pixel, in centred coordinates)."""
    rot, sx = torch.deg2rad(params.angle), torch.deg2rad(params.shear)
    a, c = torch.cos(rot), torch.sin(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * -params.tx + m1 * -params.ty
    m5 = m3 * -params.tx + m4 * -params.ty
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def affine_batch(images: torch.Tensor, params: AffineParams) -> torch.Tensor:
    """Warp a float batch (N, C, H, W) by each image's affine (nearest neighbour, zeros outside), with
    torchvision's sampling grid (``_affine_grid``), on the batch's device."""
    n, _, height, width = images.shape
    theta = inverse_affine_matrices(params).to(device=images.device, dtype=torch.float32)
    base = torch.empty(1, height, width, 3, dtype=torch.float32, device=images.device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=images.device))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height,
                                      device=images.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32, device=images.device)
    grid = base.view(1, height * width, 3).expand(n, -1, -1).bmm(theta.transpose(1, 2).div(scale))
    return functional.grid_sample(images, grid.view(n, height, width, 2), mode="nearest", padding_mode="zeros",
                                  align_corners=False)


class BatchTransform:
    """Prepared uint8 images to the model's input: optional augmentation (per image, drawn from the
    generator it is given), three channels, scaled to [0, 1] and normalised with the weights' mean and
    std, all on the batch's device. ``random`` says whether two calls can differ (as
    ``ImageTransform.random``), so that the frozen-prefix cache knows when outputs may be reused."""

    def __init__(self, preprocessing: Preprocessing, *, augment: bool) -> None:
        self.mean, self.std = list(preprocessing.mean), list(preprocessing.std)
        self.random = augment

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        floats = images.to(torch.float32)
        if self.random:
            if generator is None:
                raise ValueError("an augmenting BatchTransform needs the generator to draw from")
            floats = affine_batch(floats, draw_affine(len(images), *images.shape[-2:], generator))
        return self._normalised(floats)

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """The batch without augmentation: what evaluation, the frozen-prefix cache and Auto-RGN see."""
        return self._normalised(images.to(torch.float32))

    def _normalised(self, floats: torch.Tensor) -> torch.Tensor:
        # the per-image transform's ToDtype(scale=True) and Normalize, element-wise on the batch
        floats = floats.mul_(1.0 / 255).expand(-1, 3, -1, -1)
        return v2.functional.normalize(floats, self.mean, self.std)


class PreparedImages(torch.utils.data.Dataset):
    """One split, prepared once: a DataLoader fetches whole batches of uint8 rows (``__getitems__``),
    which ``OnDevice`` turns into model input. ``dataset[i]`` is one image as the model sees it without
    augmentation (what the frozen-prefix cache and Auto-RGN's measurement read), with its label."""

    def __init__(self, split: Split, prepared: PreparedSplit, transform: BatchTransform) -> None:
        self.split = split
        self.prepared = prepared
        self.transform = transform

    def __len__(self) -> int:
        return len(self.prepared.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        label = self.prepared.labels[index]
        return self.transform.plain(self.prepared.images[index:index + 1])[0], (label if label.ndim else int(label))

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.prepared.images[index], self.prepared.labels[index]


class OnDevice:
    """A DataLoader's ``collate_fn`` for ``PreparedImages``: moves the uint8 batch to ``device`` (pinned
    first on CUDA, so the copy overlaps), then applies the dataset's ``BatchTransform`` there, drawing
    augmentation from ``generator``. It runs in the loader's main process (no workers: the host work is
    a row gather), so the draws follow the batches' order exactly."""

    def __init__(self, transform: BatchTransform, device: torch.device, generator: torch.Generator | None) -> None:
        self.transform = transform
        self.device = device
        self.generator = generator

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        if self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, non_blocking=True)
        return self.transform(images, self.generator), labels.to(self.device, non_blocking=True)
