"""A class-per-subfolder image folder (``root/<class>/<image>``), split by medtune.

The split is stratified and seeded (75/15/10 by default, as in the ConvSkip paper) and independent of
the trial's seed, so every trial of a search sees the same train, validation and test images.
Images are decoded with Pillow once, when the data set is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from tuner.data.splits import DatasetSplits, Split
from tuner.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DEFAULT_FRACTIONS = (0.75, 0.15, 0.10)


def load_image_folder(root: Path, *, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                      split_seed: int = 0) -> DatasetSplits:
    """Decode every image under ``root/<class>/`` and split them, stratified by class."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise ConfigError(
            f"image folder {root} has {len(class_dirs)} class subfolder(s); it needs one subfolder "
            "per class (at least two), each holding that class's images."
        )
    paths: list[Path] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        paths += files
        labels += [index] * len(files)
    images = decode_images(paths)
    label_array = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx, test_idx = stratified_split(label_array, fractions, split_seed, source=str(root))
    class_names = tuple(d.name for d in class_dirs)

    def take(indices: np.ndarray) -> Split:
        return Split(images=[images[i] for i in indices], labels=label_array[indices])

    return DatasetSplits(name=root.name, task="binary" if len(class_names) == 2 else "multiclass",
                         class_names=class_names, train=take(train_idx), val=take(val_idx),
                         test=take(test_idx))


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], seed: int, *,
                     source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded train/val/test split that keeps each class's share in every split."""
    train_frac, val_frac, test_frac = fractions
    indices = np.arange(len(labels))
    try:
        train_idx, rest_idx = train_test_split(indices, train_size=train_frac, stratify=labels,
                                               random_state=seed)
        val_idx, test_idx = train_test_split(rest_idx, test_size=test_frac / (val_frac + test_frac),
                                             stratify=labels[rest_idx], random_state=seed)
    except ValueError as error:
        counts = dict(zip(*np.unique(labels, return_counts=True), strict=True))
        raise ConfigError(
            f"{source}: cannot make a stratified {train_frac:.0%}/{val_frac:.0%}/{test_frac:.0%} split "
            f"with images per class {counts} ({error}). Every class needs enough images to appear in "
            "each split (about 10 or more)."
        ) from error
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def decode_images(paths: list[Path]) -> list[np.ndarray]:
    """Decode to uint8 arrays: grayscale stays (H, W); anything with colour becomes (H, W, 3)."""
    decoded = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                decoded.append(np.asarray(image.convert(mode), dtype=np.uint8))
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ConfigError(f"cannot decode image {path} ({error}): the file is corrupt or not an "
                              "image. Replace or remove it.") from error
    return decoded
