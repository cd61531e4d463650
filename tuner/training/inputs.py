"""A trial's input pipeline: which pixels each split is resized and cropped to, how the training
split is sampled, and the three loaders that feed the model.

- **Resize and crop.** Medical images come already framed, so by default every image is resized to
  ``image_size`` square and nothing is cut away (``crop=none``). ``crop=weights`` applies the starting
  weights' own convention where they declare one (``Preprocessing.crop_pct``; torchvision's and timm's
  ImageNet weights do): resize to ``floor(image_size / crop_pct)``, then the centre ``image_size``
  square, as torchvision's ``transforms()`` and timm's eval transform do. ``resize_size`` sets that
  resize explicitly and excludes ``crop=weights``.
- **Sampling.** ``sampler=shuffle`` is a fresh permutation of the training split each epoch.
  ``sampler=balanced`` draws as many training images per epoch, with replacement, each with a
  probability inversely proportional to its class's frequency (torch's ``WeightedRandomSampler``), so
  that every class is seen equally often on average. Both draw from the trial's loader generator,
  which every checkpoint saves, so a resumed trial or a replicate draws exactly the same batches.
- **Loaders.** Each split is prepared once (``tuner.data.batches``: resized, uint8), and each batch is
  augmented and normalised on the trial's device. No DataLoader workers: the host work per batch is a
  gather of uint8 rows, which a worker process would only add copies to.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from tuner.data import DatasetSplits
from tuner.data.batches import BatchTransform, OnDevice, PreparedImages, prepare_split
from tuner.data.splits import Split
from tuner.errors import ConfigError
from tuner.spec import Param, Preprocessing
from tuner.training.losses import balanced_class_weights, class_counts

SAMPLER = Param("sampler", str, "shuffle", "how training images are drawn each epoch: `shuffle` (a permutation) "
                "or `balanced` (with replacement, classes equally likely)", choices=("shuffle", "balanced"))
CROP = Param("crop", str, "none", "`none`: resize to `image_size`, nothing cut away; `weights`: the starting "
             "weights' resize-then-centre-crop convention (`crop_pct`), where they declare one",
             choices=("none", "weights"))


def applied_preprocessing(config: dict[str, Any], preprocessing: Preprocessing) -> tuple[Preprocessing, int | None]:
    """The preprocessing the trial applies (``crop_pct`` kept only when ``crop=weights`` uses it) and
    the size the shorter side is resized to before the centre crop (None: a square resize)."""
    if config["crop"] == "weights" and preprocessing.crop_pct is not None:
        return preprocessing, math.floor(config["image_size"] / preprocessing.crop_pct)
    return replace(preprocessing, crop_pct=None), config["resize_size"]


def preprocessing_params(preprocessing: Preprocessing, resize_size: int | None) -> dict[str, str]:
    """The applied preprocessing as the trial reports it (logged as MLflow params): the weights' mean,
    std, interpolation and crop_pct with where they come from, and the resize before the crop."""
    return {**preprocessing.as_params(), "preprocess_resize": "none" if resize_size is None else str(resize_size)}


def check_sampler_for_data(config: dict[str, Any], data: DatasetSplits) -> None:
    """``sampler=balanced`` weighs single-label classes; a multi-label image has no one class."""
    if config["sampler"] == "balanced" and data.task == "multilabel":
        raise ConfigError(f"sampler=balanced draws classes equally often, but {data.name!r} is multi-label (an "
                          "image has several labels). Use sampler=shuffle.")


def balanced_sampler(split: Split, num_classes: int, generator: torch.Generator) -> WeightedRandomSampler:
    """``len(split)`` draws with replacement, each image weighted by its class's balanced weight (so each
    class is drawn with probability 1 / num_classes), from ``generator``."""
    weights = balanced_class_weights(class_counts(split.labels, num_classes))
    per_image = weights[torch.as_tensor(split.labels, dtype=torch.long)]
    return WeightedRandomSampler(per_image, num_samples=len(split), replacement=True, generator=generator)


def build_loaders(data: DatasetSplits, config: dict[str, Any], preprocessing: Preprocessing, generator: torch.Generator,
                  device: torch.device) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train, validation and test loaders over images prepared once (``tuner.data.batches``), each batch
    transformed on ``device``. The training loader draws its order (``sampler``) and its augmentation
    from ``generator`` (saved in checkpoints) and drops a last batch of one, which BatchNorm cannot
    normalise."""
    applied, resize_size = applied_preprocessing(config, preprocessing)
    batch = config["batch_size"]

    def dataset(split: Split, augment: bool) -> PreparedImages:
        prepared = prepare_split(split, config["image_size"], resize_size, applied.interpolation)
        return PreparedImages(split, prepared, BatchTransform(applied, augment=augment))

    train_set = dataset(data.train, config["augment"])
    sampler = balanced_sampler(data.train, data.num_classes, generator) if config["sampler"] == "balanced" else None
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=sampler is None, sampler=sampler,
                              generator=generator, drop_last=len(train_set) % batch == 1,
                              collate_fn=OnDevice(train_set.transform, device, generator))
    val_loader, test_loader = (DataLoader(split_set, batch_size=max(batch, 128),
                                          collate_fn=OnDevice(split_set.transform, device, None))
                               for split_set in (dataset(data.val, False), dataset(data.test, False)))
    return train_loader, val_loader, test_loader
