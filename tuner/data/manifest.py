"""A CSV manifest: one row per image, ``path`` plus its labels, optionally ``patient_id`` and ``split``.

- ``path,label``: a binary or multi-class task (the classes are the label values, sorted);
- ``path,<label_1>,...,<label_k>``: a multi-label task, one 0/1 column per label.

Paths are relative to the manifest's folder (or absolute). Splits come from a ``split`` column
(train / val / test) or are made by medtune: 75/15/10, stratified by label, and grouped by patient so
that no patient's images land in two splits (images of one patient are not independent; a patient in
both training and test inflates every metric).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from tuner.data.folder import DEFAULT_FRACTIONS, decode_images
from tuner.data.splits import SPLIT_NAMES, DatasetSplits, Split
from tuner.errors import ConfigError

RESERVED = ("path", "patient_id", "split")
_FOLDS = 20  # 75/15/10 = 15/3/2 folds of 20


def load_manifest(path: Path, *, split_seed: int = 0) -> DatasetSplits:
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ConfigError(f"cannot read manifest {path} as CSV ({error}).") from error
    if "path" not in table:
        raise ConfigError(f"manifest {path} has no 'path' column (it has {', '.join(table.columns)}).")
    label_columns = [c for c in table.columns if c not in RESERVED]
    if not label_columns:
        raise ConfigError(f"manifest {path} has no label column: add 'label', or one 0/1 column per label.")
    files = [Path(p) if Path(p).is_absolute() else path.parent / p for p in table["path"].astype(str)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"manifest {path}: {len(missing)} image file(s) do not exist, e.g. "
                          f"{', '.join(missing[:3])}. Fix the paths (relative to the manifest's folder).")

    if len(label_columns) == 1:
        values = table[label_columns[0]].astype(str)
        class_names = tuple(sorted(values.unique()))
        labels = values.map({name: i for i, name in enumerate(class_names)}).to_numpy(np.int64)
        task = "binary" if len(class_names) == 2 else "multiclass"
        strata = labels
    else:
        matrix = table[label_columns]
        bad = [c for c in label_columns if not matrix[c].isin([0, 1]).all()]
        if bad:
            raise ConfigError(f"manifest {path}: in a multi-label manifest every label column holds 0 or 1, but "
                              f"{', '.join(repr(c) for c in bad)} hold other values (e.g. "
                              f"{matrix[bad[0]][~matrix[bad[0]].isin([0, 1])].iloc[0]!r}).")
        labels = matrix.to_numpy(np.float32)
        class_names, task = tuple(label_columns), "multilabel"
        strata = _rarest_label(labels)

    groups = table["patient_id"].astype(str).to_numpy() if "patient_id" in table else np.arange(len(table))
    if "split" in table:
        assignment = _given_splits(table, path)
    else:
        assignment = _grouped_stratified_split(strata, groups, split_seed)
    images = decode_images(files)

    def take(name: str) -> Split:
        index = np.flatnonzero(assignment == name)
        return Split(images=[images[i] for i in index], labels=labels[index])

    return DatasetSplits(name=path.stem, task=task, class_names=class_names,
                         **{name: take(name) for name in SPLIT_NAMES})


def _given_splits(table: pd.DataFrame, path: Path) -> np.ndarray:
    split = table["split"].astype(str).str.strip().str.lower()
    unknown = sorted(set(split) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"manifest {path}: split values must be train, val or test, not {', '.join(unknown)}.")
    if "patient_id" in table:
        per_patient = table.assign(split=split).groupby(table["patient_id"].astype(str))["split"].nunique()
        leaking = per_patient[per_patient > 1].index.tolist()
        if leaking:
            raise ConfigError(f"manifest {path}: patient(s) {', '.join(leaking[:5])} appear in more than one split; "
                              "a patient's images must all be in one split.")
    return split.to_numpy()


def _rarest_label(labels: np.ndarray) -> np.ndarray:
    """For stratifying a multi-label set: each image's rarest positive label (-1 when it has none)."""
    frequency = labels.sum(axis=0)
    masked = np.where(labels > 0, frequency, np.inf)
    return np.where(labels.any(axis=1), masked.argmin(axis=1), -1)


def _grouped_stratified_split(strata: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    folds = np.empty(len(strata), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=_FOLDS, shuffle=True, random_state=seed)
    for fold, (_, index) in enumerate(splitter.split(np.zeros(len(strata)), strata, groups)):
        folds[index] = fold
    train_folds = round(DEFAULT_FRACTIONS[0] * _FOLDS)
    val_folds = round(DEFAULT_FRACTIONS[1] * _FOLDS)
    return np.where(folds < train_folds, "train", np.where(folds < train_folds + val_folds, "val", "test"))
