"""The in-memory form every data source produces: decoded uint8 images plus labels, per split.

Images are decoded once, on the driver, into plain numpy arrays. Ray's object store hands the same
arrays to every trial on a node as read-only, zero-copy views, so trials running side by side share
one copy of the data instead of each decoding and holding their own.

The splits medtune makes itself (an image folder or manifest without given splits, and the folds of
k-fold cross-validation) all come from one path, ``grouped_split`` / ``fold_splits``: stratified by
label, seeded, and grouped by patient where the source names patients, since images of one patient
are not independent and a patient on both sides of a split inflates every score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from tuner.errors import ConfigError

Task = Literal["binary", "multiclass", "multilabel"]
SPLIT_NAMES = ("train", "val", "test")
# The default 75/15/10 split (the ConvSkip paper's) in twentieths: 15, 3 and 2 of 20 grouped folds.
# A split carved from a given train split keeps these proportions (val: 3 of 18, test: 2 of 17).
SPLIT_PARTS = {"train": 15, "val": 3, "test": 2}


@dataclass(frozen=True)
class Split:
    """One split. ``images`` is one (N, H, W[, 3]) uint8 array, or a list of (H, W[, 3]) arrays
    when the source's images differ in size."""

    images: np.ndarray | Sequence[np.ndarray]
    labels: np.ndarray  # (N,) int64 class indices, or (N, K) float32 0/1 for a multi-label task
    # (N,) patient ID of each image where the source names patients (a manifest's patient_id column,
    # an image folder's --patient-regex), so that later splits (k-fold) keep each patient on one side.
    groups: np.ndarray | None = None

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
    # What the integrity check found legal but worth knowing (possible leakage, mixed shapes), one line
    # each: load_dataset warns with them, and a search records them on its MLflow run.
    data_warnings: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """The number of classes (labels, for a multi-label task): the width of the model's output."""
        return len(self.class_names)

    def split(self, name: str) -> Split:
        """A split by its name (``train``, ``val`` or ``test``), for code that loops over them."""
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


def stratification_labels(labels: np.ndarray) -> np.ndarray:
    """One stratum per image: its class, or for a multi-label task its rarest positive label (-1 when
    it has none), so that rare labels reach every split."""
    if labels.ndim == 1:
        return labels
    frequency = labels.sum(axis=0)
    masked = np.where(labels > 0, frequency, np.inf)
    return np.where(labels.any(axis=1), masked.argmin(axis=1), -1)


def grouped_split(strata: np.ndarray, groups: np.ndarray, parts: dict[str, int], seed: int, *,
                  source: str) -> np.ndarray:
    """The split name of each image: ``sum(parts)`` stratified, seeded folds that never divide a
    group, handed out in order (``{"train": 15, "val": 3, "test": 2}``: folds 0-14 train, 15-17 val,
    18-19 test). Without patient IDs pass one group per image."""
    n_folds = sum(parts.values())
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        shares = "/".join(f"{name} {count}" for name, count in parts.items())
        raise ConfigError(f"{source}: {n_groups} patients (or images) are too few to split {shares} of "
                          f"{n_folds}: it needs at least {n_folds}. Add images, or give the splits yourself.")
    folds = np.empty(len(strata), dtype=np.int64)
    for fold, index in enumerate(_grouped_folds(strata, groups, n_folds, seed, source=source)):
        folds[index] = fold
    bounds = np.cumsum(list(parts.values()))
    return np.asarray(list(parts))[np.searchsorted(bounds, folds, side="right")]


def check_patients_within_splits(assignment: np.ndarray, groups: np.ndarray, *, source: str) -> None:
    """Refuse given splits that put one patient's images in two splits: the same leak a made split
    avoids, so a user's own split is held to the same rule."""
    splits_of: dict[str, set[str]] = {}
    for patient, split in zip(groups.astype(str).tolist(), assignment.tolist(), strict=True):
        splits_of.setdefault(patient, set()).add(split)
    leaking = sorted(patient for patient, splits in splits_of.items() if len(splits) > 1)
    if leaking:
        raise ConfigError(f"{source}: patient(s) {', '.join(leaking[:5])} appear in more than one split; "
                          "a patient's images must all be in one split.")


def take(split: Split, index: np.ndarray) -> Split:
    """The images, labels and patient IDs of ``split`` at ``index``, in that order."""
    images = split.images[index] if isinstance(split.images, np.ndarray) else [split.images[i] for i in index]
    groups = None if split.groups is None else split.groups[index]
    return Split(images=images, labels=split.labels[index], groups=groups)


def fold_splits(data: DatasetSplits, k: int, fold: int, *, seed: int = 0) -> DatasetSplits:
    """Fold ``fold`` of ``k``-fold cross-validation: train and val pooled, cut into ``k`` stratified,
    seeded folds grouped by patient where patient IDs are known; fold ``fold`` is the val split, the
    rest is train, and the test split is the given one, untouched.

    Small medical data sets make one validation split a noisy judge; each fold is a replicate for the
    analysis. The folds depend on ``seed`` only (not on the trial's seed), so every configuration of a
    search sees the same folds. Without patient IDs the folds are per image."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"folds={k!r}: k-fold cross-validation needs an integer number of folds >= 2 "
                          "(e.g. --folds 5); leave it unset for the single given split.")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < k:
        raise ConfigError(f"fold={fold!r}: with folds={k} the fold index is an integer in 0..{k - 1}.")
    pool = _pooled(data.train, data.val)
    groups = pool.groups if pool.groups is not None else np.arange(len(pool))
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise ConfigError(f"folds={k}: data set {data.name!r} has only {n_groups} patients (or images) in "
                          f"train and val together; use at most {n_groups} folds.")
    val_index = _grouped_folds(stratification_labels(pool.labels), groups, k, seed,
                               source=f"data set {data.name!r} (folds={k})")[fold]
    in_val = np.zeros(len(pool), dtype=bool)
    in_val[val_index] = True
    result = replace(data, train=take(pool, np.flatnonzero(~in_val)), val=take(pool, np.flatnonzero(in_val)))
    check_splits(result)
    return result


def _grouped_folds(strata: np.ndarray, groups: np.ndarray, n_folds: int, seed: int, *,
                   source: str) -> list[np.ndarray]:
    """The image indices of each of ``n_folds`` stratified, seeded folds that never divide a group."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    try:
        return [index for _, index in splitter.split(np.zeros(len(strata)), strata, groups)]
    except ValueError as error:
        counts = dict(zip(*(v.tolist() for v in np.unique(strata, return_counts=True)), strict=True))
        raise ConfigError(f"{source}: cannot cut {n_folds} stratified folds from images per class {counts} "
                          f"({error}). Some class needs at least {n_folds} images; add images, or give the "
                          "splits yourself.") from error


def _pooled(first: Split, second: Split) -> Split:
    """Two splits as one, ``first``'s images before ``second``'s."""
    if (isinstance(first.images, np.ndarray) and isinstance(second.images, np.ndarray)
            and first.images.shape[1:] == second.images.shape[1:]):
        images: np.ndarray | list[np.ndarray] = np.concatenate([first.images, second.images])
    else:
        images = [*first.images, *second.images]
    groups = (None if first.groups is None or second.groups is None
              else np.concatenate([first.groups, second.groups]))
    return Split(images=images, labels=np.concatenate([first.labels, second.labels]), groups=groups)
