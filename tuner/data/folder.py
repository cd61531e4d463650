"""Image folders, in one of two layouts, split by medtune where no split is given.

- ``root/<class>/<image>``: one subfolder per class; medtune splits 75/15/10.
- ``root/<split>/<class>/<image>``: top-level split folders (``train``; ``val``, ``valid`` or
  ``validation``; ``test``; any case), each holding the same class folders. Given splits are used as
  they are; a missing val or test split is carved from train, in the 75:15 or 75:10 proportion of the
  default split, so a ``train/valid`` export (common for Kaggle and Roboflow data) still gets a held-out
  test split while its validation images stay as given.

Anything below a class folder is that class's images: folders nested deeper are never classes.
Splits medtune makes are stratified and seeded (independent of the trial's seed, so every trial of a
search sees the same images), and grouped by patient when ``patient_regex`` finds a patient ID in each
file name. Images are decoded with Pillow once, when the data set is loaded (``decode``: palette,
16-bit, RGBA, CMYK and other valid modes are converted, not refused).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from tuner.data.decode import decode_images
from tuner.data.splits import (
    SPLIT_NAMES,
    SPLIT_PARTS,
    DatasetSplits,
    Split,
    check_patients_within_splits,
    grouped_split,
    take,
)
from tuner.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# Top-level folder names (compared in lower case) that mark a split, and the split each one is.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
PATIENT_REGEX_EXAMPLE = r"'^(P\d+)_'"


class PatientLeakWarning(UserWarning):
    """Medtune split images whose patients it does not know, so one patient may sit in two splits.

    Its own category, so that a user who knows the images are independent can silence exactly this
    (``warnings.simplefilter("ignore", PatientLeakWarning)``)."""


def load_image_folder(root: Path, *, patient_regex: str | None = None, split_seed: int = 0) -> DatasetSplits:
    """Decode every image of an image folder in either layout and return its train/val/test splits.

    ``patient_regex`` (``--patient-regex``) is searched in each file name; its group ``patient``, else
    its group 1, else its whole match, is the image's patient ID, and no patient then lands in two
    splits. Without it, a split medtune makes raises a ``PatientLeakWarning``."""
    pattern = compile_patient_regex(patient_regex)
    given = split_folders(root)
    class_names = class_folder_names(given["train"])
    paths: list[Path] = []
    labels: list[int] = []
    split_of: list[str] = []
    for split_name, folder in given.items():
        split_paths, split_labels = _list_images(folder, class_names, split_name)
        paths += split_paths
        labels += split_labels
        split_of += [split_name] * len(split_paths)
    assignment = np.asarray(split_of)
    label_array = np.asarray(labels, dtype=np.int64)
    patients = None if pattern is None else patient_ids(paths, pattern)
    if patients is not None and len(given) > 1:
        check_patients_within_splits(assignment, patients, source=f"image folder {root} (--patient-regex)")
    everything = Split(images=decode_images(paths), labels=label_array, groups=patients)
    missing = [name for name in SPLIT_NAMES if name not in given]
    if missing:
        in_train = np.flatnonzero(assignment == "train")
        parts = {name: SPLIT_PARTS[name] for name in ("train", *missing)}
        assignment[in_train] = grouped_split(label_array[in_train],
                                             in_train if patients is None else patients[in_train],
                                             parts, split_seed, source=f"image folder {root}")
        if patients is None:
            warnings.warn(
                f"image folder {root}: medtune made the {' and '.join(missing)} split(s) without patient IDs, "
                "so images of one patient may be in two splits and inflate the scores. If the file names "
                f"carry a patient ID, pass it as a regex, e.g. --patient-regex {PATIENT_REGEX_EXAMPLE} "
                "(its group 'patient', else group 1).", PatientLeakWarning, stacklevel=3)
    return DatasetSplits(name=root.name, task="binary" if len(class_names) == 2 else "multiclass",
                         class_names=class_names,
                         **{name: take(everything, np.flatnonzero(assignment == name)) for name in SPLIT_NAMES})


def split_folders(root: Path) -> dict[str, Path]:
    """The given splits: ``{"train": root}`` for a class-per-subfolder folder, else the top-level
    split folders by split name. A top level that mixes split and other folders is refused, since
    either reading of it would silently train on the wrong images."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [p for p in folders if p.name.lower() in SPLIT_FOLDERS]
    if not splits:
        return {"train": root}
    others = [p.name for p in folders if p not in splits]
    if others:
        raise ConfigError(
            f"image folder {root} mixes split folders ({', '.join(p.name for p in splits)}) with other folders "
            f"({', '.join(others)}). Use either {root}/<split>/<class>/ (train; val, valid or validation; "
            f"test) or {root}/<class>/, not both: move or remove the other folders.")
    given: dict[str, Path] = {}
    for folder in splits:
        name = SPLIT_FOLDERS[folder.name.lower()]
        if name in given:
            raise ConfigError(f"image folder {root} has two {name} split folders ({given[name].name} and "
                              f"{folder.name}); keep one.")
        given[name] = folder
    if "train" not in given:
        raise ConfigError(f"image folder {root} has split folders ({', '.join(p.name for p in splits)}) but no "
                          "train folder; add train/<class>/ (val and test are carved from train when absent).")
    return {name: given[name] for name in SPLIT_NAMES if name in given}


def class_folder_names(folder: Path) -> tuple[str, ...]:
    """The class names: ``folder``'s subfolders, sorted. A class folder holding split folders is
    refused (the splits inside it would be pooled into one class's images)."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise ConfigError(
            f"image folder {folder} has {len(class_dirs)} class subfolder(s); it needs one subfolder "
            "per class (at least two), each holding that class's images, or top-level split folders "
            "(train, val, test), each holding one subfolder per class."
        )
    for class_dir in class_dirs:
        nested = sorted(p.name for p in class_dir.iterdir() if p.is_dir() and p.name.lower() in SPLIT_FOLDERS)
        if nested:
            raise ConfigError(
                f"class folder {class_dir} holds split folders ({', '.join(nested)}): medtune reads "
                f"<root>/<split>/<class>/, not <root>/<class>/<split>/. Rearrange the folders so that the "
                "split folders are at the top.")
    return tuple(d.name for d in class_dirs)


def compile_patient_regex(patient_regex: str | None) -> re.Pattern[str] | None:
    """The compiled ``--patient-regex``; a broken pattern is refused before any image is read."""
    if patient_regex is None:
        return None
    try:
        return re.compile(patient_regex)
    except re.error as error:
        raise ConfigError(f"--patient-regex {patient_regex!r} is not a valid regular expression ({error}). "
                          f"Pass one that finds the patient ID in a file name, e.g. {PATIENT_REGEX_EXAMPLE}."
                          ) from error


def patient_ids(paths: list[Path], pattern: re.Pattern[str]) -> np.ndarray:
    """The patient ID of each file: ``pattern`` searched in its file name (group ``patient``, else
    group 1, else the whole match). A file name it does not match is refused: guessing would put that
    image's patient anywhere."""
    group: str | int = "patient" if "patient" in pattern.groupindex else 1 if pattern.groups else 0
    ids: list[str] = []
    unmatched: list[str] = []
    for path in paths:
        match = pattern.search(path.name)
        found = match.group(group) if match else None
        if not found:
            unmatched.append(str(path))
        ids.append(found or "")
    if unmatched:
        raise ConfigError(f"--patient-regex {pattern.pattern!r} finds no patient ID in {len(unmatched)} file "
                          f"name(s), e.g. {', '.join(unmatched[:3])}. Every image's file name must match it "
                          f"(e.g. {PATIENT_REGEX_EXAMPLE} for P012_scan3.png).")
    return np.asarray(ids)


def _list_images(folder: Path, class_names: tuple[str, ...], split_name: str) -> tuple[list[Path], list[int]]:
    """Each image file under ``folder/<class>/`` (any depth) and its class index in ``class_names``."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in class_dirs if p.name not in class_names]
    if unknown:
        raise ConfigError(f"the {split_name} folder {folder} has class folder(s) {', '.join(unknown)} that train "
                          f"lacks (train's classes: {', '.join(class_names)}). Every class must have training "
                          "images: rename or remove them.")
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        paths += files
        labels += [class_names.index(class_dir.name)] * len(files)
    return paths, labels
