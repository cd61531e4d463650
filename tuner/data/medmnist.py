"""MedMNIST ``.npz`` files, found by name in a data root, with their official keys.

A name whose file is not in the data root is downloaded once, on the driver, from MedMNIST's official
URL and checked against its MD5 (``download``); never inside a trial, where it would repeat on every
node. Offline (``$MEDTUNE_OFFLINE``, or no network), the message says which file to put where.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from tuner.data.download import DATA_ROOT_ENV, fetch, official_file
from tuner.data.integrity import image_array, label_array
from tuner.data.splits import SPLIT_NAMES, DatasetSplits, Split, Task
from tuner.errors import ConfigError

# MedMNIST's own default root, so files the ``medmnist`` package already downloaded are found.
DEFAULT_DATA_ROOT = Path("~/.medmnist")
DOWNLOAD_PAGE = "https://zenodo.org/records/10519652"

# The 2-D MedMNIST v2 data sets medtune can train on: task and class names (MedMNIST's INFO table).
_DATASETS: dict[str, tuple[Task, tuple[str, ...]]] = {
    "breastmnist": ("binary", ("malignant", "normal, benign")),
    "pneumoniamnist": ("binary", ("normal", "pneumonia")),
    "pathmnist": ("multiclass", ("adipose", "background", "debris", "lymphocytes", "mucus",
                                 "smooth muscle", "normal colon mucosa", "cancer-associated stroma",
                                 "colorectal adenocarcinoma epithelium")),
    "dermamnist": ("multiclass", ("actinic keratoses and intraepithelial carcinoma",
                                  "basal cell carcinoma", "benign keratosis-like lesions",
                                  "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions")),
    "octmnist": ("multiclass", ("choroidal neovascularization", "diabetic macular edema", "drusen",
                                "normal")),
    "retinamnist": ("multiclass", ("0", "1", "2", "3", "4")),
    "bloodmnist": ("multiclass", ("basophil", "eosinophil", "erythroblast", "immature granulocytes",
                                  "lymphocyte", "monocyte", "neutrophil", "platelet")),
    "tissuemnist": ("multiclass", ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                                   "Glomerular endothelial cells", "Interstitial endothelial cells",
                                   "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                                   "Thick Ascending Limb")),
    "organamnist": ("multiclass", ("bladder", "femur-left", "femur-right", "heart", "kidney-left",
                                   "kidney-right", "liver", "lung-left", "lung-right", "pancreas",
                                   "spleen")),
}
_DATASETS["chestmnist"] = ("multilabel", (
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
    "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"))
_DATASETS["organcmnist"] = _DATASETS["organamnist"]
_DATASETS["organsmnist"] = _DATASETS["organamnist"]
_SIZES = ("28", "64", "128", "224")


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """``--data-root``, else ``$MEDTUNE_DATA_ROOT``, else MedMNIST's default ``~/.medmnist``."""
    chosen = data_root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


def is_medmnist_name(name: str) -> bool:
    """``breastmnist`` and its MedMNIST+ sizes (``breastmnist_224``) are MedMNIST names."""
    base, _, size = name.partition("_")
    return base in _DATASETS and (not size or size in _SIZES)


def known_names() -> list[str]:
    """The MedMNIST base names medtune knows, for error messages that list the choices."""
    return sorted(_DATASETS)


def load_medmnist(name: str, data_root: str | os.PathLike | None = None) -> DatasetSplits:
    """Load ``<data_root>/<name>.npz`` with MedMNIST's official split keys, downloading the official
    file first when the data root lacks it."""
    if not is_medmnist_name(name):
        raise ConfigError(
            f"unknown MedMNIST data set {name!r}. Known: {', '.join(known_names())} "
            f"(optionally with a size suffix: {', '.join('_' + s for s in _SIZES[1:])})."
        )
    root = resolve_data_root(data_root)
    path = medmnist_path(name, root)
    official = official_file(name)
    if not path.is_file() and official is not None:
        path = fetch(official, root)
    if not path.is_file():
        raise ConfigError(
            f"MedMNIST file not found: {path}. Put the official {name}.npz (from {DOWNLOAD_PAGE}) "
            f"into {root}, or point --data-root or ${DATA_ROOT_ENV} at the folder that holds it."
        )
    task, class_names = _DATASETS[name.partition("_")[0]]
    return load_npz(path, name=name, task=task, class_names=class_names)


def medmnist_path(name: str, root: Path) -> Path:
    """Where a MedMNIST name's file is in ``root``: ``<name>.npz``, or the official file name where it
    differs (``breastmnist_28`` is MedMNIST's plain ``breastmnist.npz``)."""
    path = root / f"{name}.npz"
    official = official_file(name)
    if path.is_file() or official is None:
        return path
    return root / official.file_name


def load_npz(path: Path, *, name: str, task: Task | None = None,
             class_names: tuple[str, ...] | None = None) -> DatasetSplits:
    """Read an ``.npz`` laid out like MedMNIST's: ``{train,val,test}_{images,labels}``.

    Without ``class_names`` (a user's own file) the classes are the label values 0..max, and the
    task is binary when there are two."""
    try:
        with np.load(path) as archive:
            keys = set(archive.files)
            expected = {f"{split}_{kind}" for split in SPLIT_NAMES for kind in ("images", "labels")}
            missing = sorted(expected - keys)
            if missing:
                raise ConfigError(
                    f"{path} is not a MedMNIST-style .npz: it lacks the keys {', '.join(missing)} "
                    f"(it has {', '.join(sorted(keys)) or 'no arrays'}). Each split needs "
                    "'<split>_images' (N, H, W[, 3]) uint8 and '<split>_labels' (N, 1)."
                )
            splits = {split: _read_split(archive, split, path) for split in SPLIT_NAMES}
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"cannot read {path} as an .npz archive ({error}); the file is corrupt "
                          "or not an .npz: download it again.") from error
    multilabel = splits["train"].labels.ndim == 2
    if class_names is None:
        num_classes = (splits["train"].labels.shape[1] if multilabel
                       else max(int(split.labels.max()) for split in splits.values()) + 1)
        class_names = tuple(str(i) for i in range(num_classes))
    if task is None:
        task = "multilabel" if multilabel else "binary" if len(class_names) == 2 else "multiclass"
    return DatasetSplits(name=name, task=task, class_names=class_names, **splits)


def _read_split(archive: np.lib.npyio.NpzFile, split: str, path: Path) -> Split:
    images = image_array(archive[f"{split}_images"], f"{path}: '{split}_images'")
    labels = label_array(archive[f"{split}_labels"], f"{path}: '{split}_labels'")
    if labels.ndim == 2 and labels.shape[1] > 1:  # one 0/1 column per label: a multi-label task
        return Split(images=images, labels=labels.astype(np.float32))
    return Split(images=images, labels=labels.reshape(-1).astype(np.int64))


def save_npz_subset(data: DatasetSplits, path: Path, per_class: dict[str, tuple[int, ...]]) -> Path:
    """Write the first ``per_class[split][c]`` images of class ``c`` of each split as a MedMNIST-style
    ``.npz`` (readable by ``load_npz``): a small real-image data set for smoke runs, tests and the
    benchmarks' short forms. Single-label data only; images keep their order within each split."""
    arrays = {}
    for split, counts in per_class.items():
        source = data.split(split)
        keep = np.sort(np.concatenate([np.flatnonzero(source.labels == label)[:n] for label, n in enumerate(counts)]))
        arrays[f"{split}_images"] = source.images[keep]
        arrays[f"{split}_labels"] = source.labels[keep].reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path
