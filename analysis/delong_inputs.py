"""The checks of the DeLong functions' inputs: labels that are 0/1, one finite score per labelled case,
both classes with at least two cases each, a known alternative and an alpha in (0, 1), each refused with
a message that says what to pass instead."""

from __future__ import annotations

from typing import Any

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")


def check_options(alternative: str, alpha: float) -> None:
    """A known alternative and an alpha strictly between 0 and 1."""
    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"alternative={alternative!r} is not one of {', '.join(map(repr, ALTERNATIVES))}: "
            "use 'greater' to test AUC_a > AUC_b, 'less' for AUC_a < AUC_b"
        )
    if not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha={alpha!r} must be a number strictly between 0 and 1, e.g. 0.05")


def as_labels(values: Any, name: str) -> np.ndarray:
    """1-D 0/1 labels (bools accepted) as int8."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per case); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: DeLong needs labelled test cases")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(
            f"{name} must hold 0/1 labels (1 = positive); got dtype {arr.dtype}. "
            "Encode the positive class as 1, e.g. (labels == 'Poor').astype(int)"
        )
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        shown = ", ".join(repr(v.item()) for v in np.unique(arr[bad])[:5])
        raise ValueError(
            f"{name} must hold only 0/1 labels (1 = positive); found {shown}. "
            "Binarise the labels first, e.g. (y == positive_class).astype(int)"
        )
    return arr.astype(np.int8)


def as_scores(values: Any, name: str, n_labels: int, labels_name: str = "y_true") -> np.ndarray:
    """1-D finite real scores, one per label, as float64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        hint = " (for predict_proba output pass the positive-class column, proba[:, 1])"
        raise ValueError(
            f"{name} must be 1-D (one score per case); got shape {arr.shape}"
            + (hint if arr.ndim == 2 else "")
        )
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)) or np.iscomplexobj(arr):
        raise ValueError(
            f"{name} must be real numbers (higher = more likely positive); got dtype {arr.dtype}"
        )
    arr = arr.astype(np.float64)
    if len(arr) != n_labels:
        raise ValueError(
            f"{name} has {len(arr)} scores but {labels_name} has {n_labels} labels: "
            "pass one score per labelled case, in the same order"
        )
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"{name} has {n_bad} non-finite value(s) (NaN or inf): drop or fix those cases "
            "before comparing AUCs"
        )
    return arr


def class_counts(y: np.ndarray, name: str) -> tuple[int, int]:
    """(positives, negatives), each at least 2."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "0" if n_pos == 0 else "1"
        raise ValueError(
            f"{name} has only one class (all {only}): DeLong needs both positive and negative cases"
        )
    if n_pos < 2 or n_neg < 2:
        raise ValueError(
            f"{name} has {n_pos} positive and {n_neg} negative case(s): the DeLong variance "
            "needs at least 2 of each class"
        )
    return n_pos, n_neg
