"""Data-set integrity: what a data set must satisfy before any trial sees it, checked once, on the driver.

``check_integrity`` runs in ``load_dataset`` (so for ``medtune tune``, ``train``, ``confirm`` and
``pretrain`` alike), before Ray starts: a fault found here costs a one-line message, not a queue of
errored trials. It refuses (``ConfigError``) what cannot be trained or scored honestly:

- a split whose images and labels (or patient IDs) differ in number;
- images that are not (H, W) or (H, W, 3) uint8 (``image_array`` converts the lossless cases first);
- a class in val or test that the train split never has (the model cannot learn it).

and warns (``DataIntegrityWarning``; the texts are also kept in ``DatasetSplits.data_warnings`` so a
search records them on its MLflow run) about what is legal but worth knowing:

- a split holding images of more than one shape (each is resized on its own);
- a class of ``class_names`` with no image in any split;
- exact copies of one split's images in another (hashed with BLAKE2b): possible leakage, with the count.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from tuner.data.splits import SPLIT_NAMES, DatasetSplits, Split
from tuner.errors import ConfigError

# The split pairs whose shared images are a leak: the later split's copies of the earlier one's.
LEAK_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))


class DataIntegrityWarning(UserWarning):
    """A data set that loads and trains but has something a user should know (possible leakage, mixed
    image shapes, a class with no images). Its own category, so that it can be silenced or made an
    error on its own (``warnings.simplefilter("error", DataIntegrityWarning)``)."""


def image_array(images: np.ndarray, where: str) -> np.ndarray:
    """An ``.npz`` split's images as (N, H, W) or (N, H, W, 3) uint8, converted where that loses
    nothing: whole numbers 0..255 of any numeric dtype are cast, floats within [0, 1] (the float-image
    convention) are scaled by 255, and a single trailing channel (N, H, W, 1) is dropped. Anything
    else (NaN or infinite values, values out of range, another layout) is refused with the fix."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        hint = " (channels first? use np.moveaxis(images, 1, -1))" if images.ndim == 4 and images.shape[1] in (1, 3) \
            else ""
        raise ConfigError(f"{where} has shape {images.shape}; expected (N, H, W) grayscale or (N, H, W, 3) colour"
                          f"{hint}.")
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_ or not np.issubdtype(images.dtype, np.number) or np.iscomplexobj(images):
        raise ConfigError(f"{where} has dtype {images.dtype}; images are numbers 0..255 (uint8): convert them, e.g. "
                          "images.astype(np.uint8) * 255 for a 0/1 mask.")
    if images.size == 0:
        return images.astype(np.uint8)
    if np.issubdtype(images.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
        if bad:
            raise ConfigError(f"{where}: {bad} image(s) hold NaN or infinite values; replace or remove those images.")
    low, high = images.min(), images.max()
    if np.issubdtype(images.dtype, np.floating) and low >= 0 and high <= 1:
        return np.rint(images * 255.0).astype(np.uint8)
    whole = np.issubdtype(images.dtype, np.integer) or bool(np.all(images == np.rint(images)))
    if low < 0 or high > 255 or not whole:
        raise ConfigError(f"{where} ({images.dtype}) holds values {low}..{high}: images are whole numbers 0..255 "
                          "or floats within [0, 1]. Rescale them to uint8, e.g. "
                          "(255 * (x - x.min()) / (x.max() - x.min())).round().astype(np.uint8).")
    return images.astype(np.uint8)


def label_array(labels: np.ndarray, where: str) -> np.ndarray:
    """An ``.npz`` split's labels as checked numbers: finite whole numbers (a fractional or NaN
    label would be truncated to a wrong class by the integer cast that follows)."""
    if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
        raise ConfigError(f"{where} has dtype {labels.dtype}; labels are class indices 0..K-1 (integers).")
    if np.issubdtype(labels.dtype, np.floating):
        bad = labels[~(np.isfinite(labels) & (labels == np.rint(labels)))]
        if bad.size:
            raise ConfigError(f"{where} holds {bad.size} label(s) that are not whole numbers (e.g. {bad.flat[0]!r}); "
                              "labels are class indices 0..K-1: fix or remove those rows.")
    return labels


def check_integrity(data: DatasetSplits) -> tuple[str, ...]:
    """Refuse a data set with a fault that would break or bias training (see the module docstring);
    return the warnings, one line each, about what is legal but worth knowing."""
    for split_name in SPLIT_NAMES:
        _check_split(data, split_name)
    _check_class_sets(data)
    return (*_shape_warnings(data), *_missing_class_warnings(data), *leak_warnings(data))


def _check_split(data: DatasetSplits, split_name: str) -> None:
    split = data.split(split_name)
    where = f"data set {data.name!r}: the {split_name} split"
    if len(split.images) != len(split.labels):
        raise ConfigError(f"{where} has {len(split.images)} images but {len(split.labels)} labels; every image needs "
                          "exactly one label row: fix the arrays (or the manifest) so the counts match.")
    if split.groups is not None and len(split.groups) != len(split.labels):
        raise ConfigError(f"{where} has {len(split.labels)} labels but {len(split.groups)} patient IDs; give every "
                          "image one patient ID.")
    if isinstance(split.images, np.ndarray):
        _check_layout(split.images.dtype, split.images.shape[1:], where)  # one array: checked once
    else:
        for image in split.images:
            _check_layout(image.dtype, image.shape, where)


def _check_layout(dtype: np.dtype, shape: tuple[int, ...], where: str) -> None:
    if dtype != np.uint8 or len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] != 3):
        raise ConfigError(f"{where} has an image of shape {shape} and dtype {dtype}; medtune trains on uint8 "
                          "(H, W) grayscale or (H, W, 3) colour images: convert them to uint8.")


def _check_class_sets(data: DatasetSplits) -> None:
    """A class that val or test holds but train never has is one the model cannot learn: its AUC
    and accuracy would be scored on a class the training never showed."""
    if data.task == "multilabel":
        return  # every label needs positives in every split: check_splits refuses the rest
    seen = set(np.unique(data.train.labels).tolist())
    for split_name in ("val", "test"):
        unseen = sorted(set(np.unique(data.split(split_name).labels).tolist()) - seen)
        if unseen:
            names = ", ".join(repr(_class_name(data, label)) for label in unseen)
            raise ConfigError(f"data set {data.name!r}: the {split_name} split has class(es) {names} that the train "
                              "split never has, so the model cannot learn them. Move some of their images into "
                              f"train, or remove them from {split_name}.")


def _class_name(data: DatasetSplits, label: int) -> str:
    return data.class_names[label] if 0 <= label < data.num_classes else str(label)


def _shape_warnings(data: DatasetSplits) -> list[str]:
    found: list[str] = []
    per_split: dict[str, set[tuple[int, ...]]] = {}
    for split_name in SPLIT_NAMES:
        counts = _shape_counts(data.split(split_name).images)
        per_split[split_name] = set(counts)
        if len(counts) > 1:
            shapes = ", ".join(f"{'x'.join(map(str, shape))}: {n}" for shape, n in counts.most_common(5))
            more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
            found.append(f"the {split_name} split holds images of {len(counts)} shapes ({shapes}{more}); each is "
                         "resized to image_size (grayscale repeated to 3 channels) on its own, so resolution, aspect "
                         "ratio or colour differ between images.")
    singles = {name: next(iter(shapes)) for name, shapes in per_split.items() if len(shapes) == 1}
    if len(singles) == len(SPLIT_NAMES) and len(set(singles.values())) > 1:
        found.append("the splits hold images of different shapes (" + ", ".join(
            f"{name} {'x'.join(map(str, shape))}" for name, shape in singles.items()) + "); check they come from "
            "one source.")
    return found


def _shape_counts(images: np.ndarray | Sequence[np.ndarray]) -> Counter[tuple[int, ...]]:
    if isinstance(images, np.ndarray):
        return Counter({tuple(images.shape[1:]): len(images)}) if len(images) else Counter()
    return Counter(tuple(image.shape) for image in images)


def _missing_class_warnings(data: DatasetSplits) -> list[str]:
    if data.task == "multilabel":
        return []
    present = set().union(*(np.unique(data.split(name).labels).tolist() for name in SPLIT_NAMES))
    missing = [name for label, name in enumerate(data.class_names) if label not in present]
    if not missing:
        return []
    return [f"class(es) {', '.join(repr(name) for name in missing)} have no image in any split: the model has an "
            "output for them that is never trained or scored."]


def image_digests(images: np.ndarray | Sequence[np.ndarray]) -> list[bytes]:
    """One BLAKE2b digest per image, of its shape and bytes: equal digests are exact copies."""
    digests = []
    for image in images:
        hasher = hashlib.blake2b(digest_size=16)
        hasher.update(repr(image.shape).encode())
        hasher.update(np.ascontiguousarray(image).tobytes())
        digests.append(hasher.digest())
    return digests


def leak_warnings(data: DatasetSplits) -> list[str]:
    """Exact copies of one split's images in a later split (train then val then test), counted per
    pair: a copy in val or test is scored on an image the model trained on (or was selected on), so
    its scores are optimistic. A warning, not a refusal: a blank frame can be a legitimate image of
    several patients, and only the user can tell."""
    digests = {name: image_digests(data.split(name).images) for name in SPLIT_NAMES}
    found = []
    for earlier, later in LEAK_PAIRS:
        label_of = _labels_by_digest(digests[earlier], data.split(earlier))
        copies = [i for i, digest in enumerate(digests[later]) if digest in label_of]
        if not copies:
            continue
        labels = data.split(later).labels
        relabelled = sum(1 for i in copies if not any(np.array_equal(labels[i], other)
                                                       for other in label_of[digests[later][i]]))
        differing = f" ({relabelled} of them with a different label)" if relabelled else ""
        found.append(f"possible leakage: {len(copies)} {later} image(s) are exact copies of {earlier} images"
                     f"{differing}, so {later} scores are optimistic. Remove the copies from one of the splits.")
    return found


def _labels_by_digest(digests: list[bytes], split: Split) -> dict[bytes, list[np.ndarray]]:
    labels: dict[bytes, list[np.ndarray]] = {}
    for digest, label in zip(digests, split.labels, strict=True):
        labels.setdefault(digest, []).append(label)
    return labels
