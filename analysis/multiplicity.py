"""Holm's step-down correction, for every family of tests the report makes (DeLong comparisons, the
seed and test-case bootstrap, likelihood-ratio tests of factors)."""

from __future__ import annotations

from typing import Any

import numpy as np


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (as ``multipletests(method="holm")``); NaNs stay NaN and
    do not count towards the family size."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
