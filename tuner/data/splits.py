"""The in-memory form every data source produces: decoded uint8 images plus labels, per split.

Images are decoded once, on the driver, into plain numpy arrays. Ray's object store hands the same
arrays to every trial on a node as read-only, zero-copy views, so trials running side by side share
one copy of the data instead of each decoding and holding their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tuner.errors import ConfigError

Task = Literal["binary", "multiclass", "multilabel"]
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split. ``images`` is one (N, H, W[, 3]) uint8 array, or a list of (H, W[, 3]) arrays
    when the source's images differ in size."""

    images: np.ndarray | Sequence[np.ndarray]
    labels: np.ndarray  # (N,) int64 class indices, or (N, K) float32 0/1 for a multi-label task

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetSplits:
    """A data set ready for training: its three splits and what its labels mean."""

    name: str
    task: Task
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def check_splits(data: DatasetSplits) -> None:
    """Refuse a data set that cannot be trained or scored: AUC needs every split to hold at least
    two classes (every label both present and absent, for a multi-label task), and labels must index
    ``class_names``."""
    for split_name in SPLIT_NAMES:
        if data.task == "multilabel":
            _check_multilabel_split(data, split_name)
            continue
        split = data.split(split_name)
        if len(split) == 0:
            raise ConfigError(f"data set {data.name!r}: the {split_name} split is empty.")
        if len(split.images) != len(split.labels):
            raise ConfigError(
                f"data set {data.name!r}: the {split_name} split has {len(split.images)} images "
                f"but {len(split.labels)} labels."
            )
        present = np.unique(split.labels)
        if present.min() < 0 or present.max() >= data.num_classes:
            raise ConfigError(
                f"data set {data.name!r}: {split_name} labels {present.tolist()} fall outside "
                f"0..{data.num_classes - 1} ({data.num_classes} classes)."
            )
        if len(present) < 2:
            only = data.class_names[int(present[0])]
            raise ConfigError(
                f"data set {data.name!r}: the {split_name} split contains only one class "
                f"({only!r}, {len(split)} images), so its AUC is undefined. Add images of the other "
                "classes to that split, or let medtune make a stratified split."
            )


def _check_multilabel_split(data: DatasetSplits, split_name: str) -> None:
    split = data.split(split_name)
    if len(split) == 0:
        raise ConfigError(f"data set {data.name!r}: the {split_name} split is empty.")
    labels = split.labels
    if labels.ndim != 2 or labels.shape[1] != data.num_classes or not np.isin(labels, (0, 1)).all():
        raise ConfigError(f"data set {data.name!r}: {split_name} labels must be a 0/1 matrix with one column "
                          f"per label ({data.num_classes}).")
    for column, name in enumerate(data.class_names):
        positives = int(labels[:, column].sum())
        if positives in (0, len(labels)):
            state = "no" if positives == 0 else "only"
            raise ConfigError(
                f"data set {data.name!r}: in the {split_name} split label {name!r} has {state} positive "
                f"images, so its AUC is undefined. Each split needs positive and negative images of every "
                "label; let medtune make a stratified split or drop that label."
            )
