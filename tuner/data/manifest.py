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

from tuner.data.decode import decode_images
from tuner.data.splits import (
    SPLIT_NAMES,
    SPLIT_PARTS,
    DatasetSplits,
    Split,
    check_patients_within_splits,
    grouped_split,
    stratification_labels,
    take,
)
from tuner.errors import ConfigError

# Columns that are not labels: everything else in the manifest is one.
RESERVED = ("path", "patient_id", "split")


def load_manifest(path: Path, *, split_seed: int = 0) -> DatasetSplits:
    """Read the manifest, check every file and label, decode the images, and split them (the given
    ``split`` column, or a made split grouped by ``patient_id``)."""
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
    else:
        matrix = table[label_columns]
        bad = [c for c in label_columns if not matrix[c].isin([0, 1]).all()]
        if bad:
            raise ConfigError(f"manifest {path}: in a multi-label manifest every label column holds 0 or 1, but "
                              f"{', '.join(repr(c) for c in bad)} hold other values (e.g. "
                              f"{matrix[bad[0]][~matrix[bad[0]].isin([0, 1])].iloc[0]!r}).")
        labels = matrix.to_numpy(np.float32)
        class_names, task = tuple(label_columns), "multilabel"

    patients = table["patient_id"].astype(str).to_numpy() if "patient_id" in table else None
    if "split" in table:
        assignment = _given_splits(table, path)
        if patients is not None:
            check_patients_within_splits(assignment, patients, source=f"manifest {path}")
    else:
        assignment = grouped_split(stratification_labels(labels),
                                   np.arange(len(table)) if patients is None else patients,
                                   SPLIT_PARTS, split_seed, source=f"manifest {path}")
    everything = Split(images=decode_images(files), labels=labels, groups=patients)
    return DatasetSplits(name=path.stem, task=task, class_names=class_names,
                         **{name: take(everything, np.flatnonzero(assignment == name)) for name in SPLIT_NAMES})


def _given_splits(table: pd.DataFrame, path: Path) -> np.ndarray:
    split = table["split"].astype(str).str.strip().str.lower()
    unknown = sorted(set(split) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"manifest {path}: split values must be train, val or test, not {', '.join(unknown)}.")
    return split.to_numpy()

