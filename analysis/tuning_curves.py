"""Expected best validation and test score against the number of trials (Dodge et al. 2019, "Show
Your Work: Improved Reporting of Experimental Results"), so a reader sees whether more search budget
would have helped, and how much of the best validation score is luck of the draw.

For ``N`` trials with validation scores ``v_(1) <= ... <= v_(N)``, the expected maximum of ``n`` draws
with replacement from their empirical distribution is

    E[max_n] = sum_i v_(i) * ((i / N)^n - ((i - 1) / N)^n)

(the weight of ``v_(i)`` is the probability that it is the largest of the ``n`` draws). The test
column follows the validation ordering: the expected test score of the trial with the best validation
score among the ``n`` drawn, i.e. the same weights on the test scores sorted by validation score
(trials tied on validation share their mean test score: a tie is broken at random). The band is the
standard deviation of that same distribution, so it says how far one search of ``n`` trials can land
from the expectation.

The draws are independent, a searcher's are not (TPE and ASHA adapt to what they saw), so the curve
describes the distribution of this search's trials, not what a longer run of the same searcher would do.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

CURVE_COLUMNS = ["n", "expected_val", "val_sd", "expected_test", "test_sd"]


def max_weights(size: int, n: int) -> np.ndarray:
    """P(the i-th smallest of ``size`` values is the maximum of ``n`` draws with replacement)."""
    i = np.arange(1, size + 1, dtype=float)
    return (i / size) ** n - ((i - 1) / size) ** n


def expected_max(values: Iterable[float], n: int) -> float:
    """Dodge et al.'s expected maximum of ``n`` draws from the empirical distribution of ``values``."""
    ordered = np.sort(np.asarray(list(values), dtype=float))
    return float(max_weights(len(ordered), n) @ ordered)


def tuning_curve(val: Iterable[float], test: Iterable[float] | None = None,
                 ns: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per budget ``n`` (default 1 .. the number of trials): the expected best validation
    score and its standard deviation, and the expected test score of the validation-best trial among
    ``n`` and its standard deviation (NaN without ``test``)."""
    v = np.asarray(list(val), dtype=float)
    t = np.full(len(v), np.nan) if test is None else np.asarray(list(test), dtype=float)
    keep = np.isfinite(v)
    v, t = v[keep], t[keep]
    if len(v) == 0:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    order = np.argsort(v, kind="stable")
    v, t = v[order], t[order]
    t = pd.Series(t).groupby(v).transform("mean").to_numpy()  # a tie on validation is broken at random
    rows = []
    for n in ns or range(1, len(v) + 1):
        weights = max_weights(len(v), int(n))
        mean_v = float(weights @ v)
        mean_t = float(weights @ t)
        rows.append({
            "n": int(n), "expected_val": mean_v, "val_sd": float(np.sqrt(weights @ (v - mean_v) ** 2)),
            "expected_test": mean_t, "test_sd": float(np.sqrt(weights @ (t - mean_t) ** 2)),
        })
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)
