"""Data sources: MedMNIST ``.npz`` files, image folders and CSV manifests.

``load_dataset`` is the one entry point: it decides the source from the spec (downloading an official
MedMNIST file the data root lacks), decodes once, and checks the data set's integrity before any
trial starts (``integrity``). ``fold_splits`` turns the loaded data into one fold of
k-fold cross-validation.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from tuner.data.folder import PatientLeakWarning, load_image_folder
from tuner.data.integrity import DataIntegrityWarning, check_integrity
from tuner.data.manifest import load_manifest
from tuner.data.medmnist import (
    is_medmnist_name,
    known_names,
    load_medmnist,
    load_npz,
    resolve_data_root,
    save_npz_subset,
)
from tuner.data.splits import DatasetSplits, Split, check_splits, fold_splits
from tuner.data.transforms import build_transform
from tuner.errors import ConfigError

__all__ = ["DataIntegrityWarning", "DatasetSplits", "ImageDataset", "PatientLeakWarning", "Split", "build_transform",
           "fold_splits", "load_dataset", "resolve_data_root", "save_npz_subset"]


def load_dataset(spec: str, data_root: str | os.PathLike | None = None, *,
                 patient_regex: str | None = None) -> DatasetSplits:
    """A MedMNIST name (``breastmnist``), an image folder, a MedMNIST-style ``.npz`` or a ``.csv``
    manifest, decoded and checked, so that a bad data set fails before any trial starts: refusals are
    ``ConfigError``; what is legal but worth knowing (possible leakage between splits, mixed image
    shapes) is a ``DataIntegrityWarning`` and is kept in the result's ``data_warnings``.

    ``patient_regex`` (``--patient-regex``) finds the patient ID in an image folder's file names;
    the other sources either have none or name patients in their own way (a manifest's
    ``patient_id`` column), so it is refused for them rather than silently ignored."""
    path = Path(spec).expanduser()
    if patient_regex is not None and not path.is_dir():
        raise ConfigError(f"--patient-regex {patient_regex!r} applies to image folders only; {spec!r} is not one "
                          "(a CSV manifest names patients in its patient_id column). Drop --patient-regex.")
    if is_medmnist_name(spec) and not path.exists():
        data = load_medmnist(spec, data_root)
    elif path.is_dir():
        data = load_image_folder(path.resolve(), patient_regex=patient_regex)
    elif path.suffix == ".npz" and path.is_file():
        data = load_npz(path.resolve(), name=path.stem)
    elif path.suffix == ".csv" and path.is_file():
        data = load_manifest(path.resolve())
    else:
        raise ConfigError(
            f"data set {spec!r} not found: it is neither a MedMNIST name ({', '.join(known_names())}), "
            "nor an existing image folder (one subfolder per class, or train/val/test folders of class "
            "subfolders), nor an existing .npz or .csv manifest."
        )
    found = check_integrity(data)
    check_splits(data)
    for line in found:
        warnings.warn(f"data set {data.name!r}: {line}", DataIntegrityWarning, stacklevel=2)
    return replace(data, data_warnings=found)


class ImageDataset(torch.utils.data.Dataset):
    """One split as (image tensor, label) pairs, transformed on the fly: images stay uint8 arrays in
    memory (shared by the trials on a node) and only the batch being trained on is float."""

    def __init__(self, split: Split, transform) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        label = self.split.labels[index]
        return self.transform(self.split.images[index]), (torch.from_numpy(label.copy()) if label.ndim else int(label))
