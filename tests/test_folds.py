"""k-fold cross-validation: each fold's val is disjoint from the others, the folds cover train+val
exactly once, the test split never changes, folds are stratified, seeded, and grouped by patient."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.test_data import write_patient_folder
from tuner.data import DatasetSplits, Split, fold_splits, load_dataset
from tuner.errors import ConfigError


def _keys(split: Split) -> Counter:
    """A split's images as a multiset of (pixels, label), so folds can be compared with the pool."""
    return Counter((np.asarray(img).tobytes(), int(label)) for img, label in zip(split.images, split.labels,
                                                                                  strict=True))


def test_folds_partition_train_and_val_and_keep_test(small_data):
    k = 5
    pool = _keys(small_data.train) + _keys(small_data.val)
    folds = [fold_splits(small_data, k, fold, seed=0) for fold in range(k)]
    union: Counter = Counter()
    for fold in folds:
        assert fold.test is small_data.test  # untouched, not a copy
        assert _keys(fold.train) + _keys(fold.val) == pool  # every pooled image on exactly one side
        union += _keys(fold.val)
        assert fold.class_names == small_data.class_names and fold.task == small_data.task
    assert union == pool  # the vals are disjoint and cover the pool exactly once
    # stratified: each val holds its share of each class, to within one image
    pooled_labels = np.concatenate([small_data.train.labels, small_data.val.labels])
    for fold in folds:
        expected = np.bincount(pooled_labels) / k
        assert np.all(np.abs(np.bincount(fold.val.labels, minlength=2) - expected) <= 1)


def test_folds_are_seeded(small_data):
    again = fold_splits(small_data, 4, 2, seed=0)
    first = fold_splits(small_data, 4, 2, seed=0)
    other = fold_splits(small_data, 4, 2, seed=1)
    assert np.array_equal(first.val.images, again.val.images) and np.array_equal(first.val.labels, again.val.labels)
    assert _keys(first.val) != _keys(other.val)


def test_folds_never_divide_a_patient(tmp_path):
    data = load_dataset(str(write_patient_folder(tmp_path / "patients")), patient_regex=r"^(P\d+)_")
    k = 4
    pooled = set(data.train.groups) | set(data.val.groups)
    covered: list[str] = []
    for fold in range(k):
        split = fold_splits(data, k, fold, seed=3)
        assert not set(split.train.groups) & set(split.val.groups)
        assert list(split.test.groups) == list(data.test.groups)
        covered += sorted(set(split.val.groups))
        # the images still belong to their patients (first two pixels encode the patient number)
        assert all(f"P{int(img[0, 0]) * 256 + int(img[0, 1]):03d}" == patient
                   for img, patient in zip(split.val.images, split.val.groups, strict=True))
    assert sorted(covered) == sorted(pooled)  # every patient is in exactly one fold's val


def test_fold_refusals(small_data):
    with pytest.raises(ConfigError, match="folds=1: k-fold cross-validation needs an integer number of folds >= 2"):
        fold_splits(small_data, 1, 0)
    with pytest.raises(ConfigError, match="fold=3: with folds=3 the fold index is an integer in 0..2"):
        fold_splits(small_data, 3, 3)
    tiny = DatasetSplits(name="tiny", task="binary", class_names=("a", "b"),
                         train=Split(images=np.zeros((4, 2, 2), np.uint8), labels=np.array([0, 1, 0, 1]),
                                     groups=np.array(["p", "p", "q", "q"])),
                         val=Split(images=np.zeros((2, 2, 2), np.uint8), labels=np.array([0, 1]),
                                   groups=np.array(["q", "r"])),
                         test=small_data.test)
    with pytest.raises(ConfigError, match="folds=5: data set 'tiny' has only 3 patients"):
        fold_splits(tiny, 5, 0)
