"""Auto-RGN's measuring pass: the relative gradient norms the epoch's learning rates are scaled by.

The scales are those of the gradient of the mean loss over ``batches`` batches of ``batch_size``
training images (all of them when there are fewer), drawn without replacement by a generator of its
own seeded from ``(seed, epoch)``: image folders are sorted by class, so the first images of a split
are usually one class, and several shuffled batches are what Lee et al.'s code averages over. The
pass measures without changing anything that training would see:

- the model runs in eval mode (with gradients on), so BatchNorm normalises with, and keeps, its
  running statistics, and dropout draws nothing;
- the images are the unaugmented evaluation transform's, and the sample comes from its own
  generator, so neither the global random stream nor the training loader's generator is touched and
  a resumed trial measures the same batches at the same epoch;
- gradients are cleared before and after, and the optimizer is not stepped.

In eval mode each image's loss depends on that image alone, so the measured gradient is a mean over
a set of images: the same set in any order gives the same scales (up to float rounding).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from tuner.strategies import relative_gradient_norms
from tuner.training.loop import Precision


def measurement_sample(n: int, size: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of the ``min(n, size)`` images measured at ``epoch``: a permutation from a generator
    seeded by ``(seed, epoch)`` only, so it is the same on a resume and never draws from training's."""
    rng = np.random.default_rng([seed % 2**64, epoch])
    return rng.permutation(n)[:min(n, size)]


def rgn_scales(model: nn.Module, dataset: Dataset, loss_fn: nn.Module, *, batch_size: int, batches: int,
               seed: int, epoch: int, device: torch.device, precision: Precision) -> list[float]:
    """Auto-RGN's per-tensor scales (``relative_gradient_norms`` over ``model.parameters()``) from the
    gradient of the mean loss over the epoch's measurement sample of ``dataset`` (unaugmented)."""
    sample = measurement_sample(len(dataset), batch_size * batches, seed, epoch)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for start in range(0, len(sample), batch_size):
            indices = sample[start:start + batch_size]
            images, labels = default_collate([dataset[int(i)] for i in indices])
            with precision.autocast():
                logits = model(images.to(device))
            # each batch's mean loss weighted by its share: the gradients add up to the sample's mean
            (loss_fn(logits.float(), labels.to(device)) * (len(indices) / len(sample))).backward()
        return relative_gradient_norms(list(model.parameters()))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
