"""DeLong tests for comparing ROC AUCs, paired (same test cases) and unpaired (different test sets).

Why DeLong: two models scored on the *same* test images make correlated errors, so their AUCs are
correlated and a naive comparison of two confidence intervals is far too conservative. DeLong,
DeLong & Clarke-Pearson (1988) estimate the full covariance of the AUCs from the structural
components (placement values) of the Mann-Whitney statistic, without any distributional
assumption on the scores. The placement values are computed here with the midrank algorithm of
Sun & Xu (2014), which is O(n log n) instead of the O(m*n) pairwise definition and handles tied
scores exactly (a tie counts 1/2, as in the Mann-Whitney U statistic).

Direction is fixed, never guessed: a higher score means "more likely positive (label 1)". pROC
and others pick the direction that makes AUC >= 0.5; doing that per model silently turns a model
that is worse than chance into a good one, so a model with AUC 0.3 stays at 0.3 here.

Numbers agree with R pROC 1.x (``roc.test``, ``var``, ``ci.auc`` with ``method="delong"``) to
about 1e-14 on pROC's own ``aSAH`` example; see ``tests/test_delong.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from analysis.delong_inputs import as_labels, as_scores, check_options, class_counts

__all__ = ["DelongResult", "auc_ci", "delong_test", "delong_unpaired"]

@dataclass(frozen=True)
class DelongResult:
    """Outcome of a DeLong comparison of model A against model B.

    ``difference`` is ``auc_a - auc_b`` and ``z`` has the same sign, so "greater" means
    "A is better". ``difference_ci`` is always the two-sided ``1 - alpha`` interval (the
    interval a results table shows), whatever ``alternative`` the p-value was computed for.
    ``se`` is the standard error of the difference. For a paired test ``n_positive`` and
    ``n_negative`` count the shared test cases; for an unpaired test they are the totals over
    both test sets (``paired`` tells which).

    A zero variance of the difference (identical rankings of the cases, e.g. the same score
    vector twice) gives ``z = 0`` and ``p_value = 1``: there is no evidence of any difference.
    """

    auc_a: float
    auc_b: float
    auc_a_ci: tuple[float, float]
    auc_b_ci: tuple[float, float]
    difference: float
    difference_ci: tuple[float, float]
    se: float
    z: float
    p_value: float
    alternative: str
    n_positive: int
    n_negative: int
    paired: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Flat dict for a results table: each CI becomes ``<name>_low`` / ``<name>_high``."""
        flat: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, tuple):
                flat[f"{key}_low"], flat[f"{key}_high"] = value
            else:
                flat[key] = value
        return flat


def delong_test(
    y_true: Any,
    scores_a: Any,
    scores_b: Any,
    *,
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> DelongResult:
    """Paired DeLong test of AUC(A) vs AUC(B) for two models scored on the same test cases.

    Args:
        y_true: 0/1 (or bool) labels, 1 = positive class.
        scores_a, scores_b: one score per case for each model; higher = more likely positive.
        alternative: "two-sided", "greater" (AUC_a > AUC_b) or "less" (AUC_a < AUC_b).
        alpha: 1 - confidence level of every interval in the result.

    The variance of the difference uses the covariance of the two models' placement values,
    which is what makes the test paired (and much more powerful than comparing two CIs).
    """
    check_options(alternative, alpha)
    y = as_labels(y_true, "y_true")
    a = as_scores(scores_a, "scores_a", len(y))
    b = as_scores(scores_b, "scores_b", len(y))
    n_pos, n_neg = class_counts(y, "y_true")

    auc_a, v10_a, v01_a = _placements(y, a)
    auc_b, v10_b, v01_b = _placements(y, b)
    var_a = _delong_variance(v10_a, v01_a)
    var_b = _delong_variance(v10_b, v01_b)
    # Variance of the difference straight from the differences of placement values: equal to
    # var_a + var_b - 2 cov(a, b), but exactly 0.0 when the two models rank the cases identically.
    var_diff = _delong_variance(v10_a - v10_b, v01_a - v01_b)
    return _result(auc_a, auc_b, var_a, var_b, var_diff, alternative, alpha, n_pos, n_neg, paired=True)


def delong_unpaired(
    y_a: Any,
    scores_a: Any,
    y_b: Any,
    scores_b: Any,
    *,
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> DelongResult:
    """DeLong comparison of two AUCs measured on different (independent) test sets.

    The two AUCs are independent, so the variance of the difference is ``var_a + var_b`` with
    no covariance term. The statistic is the one R pROC reports as ``D`` for unpaired curves;
    pROC refers it to a Student t with Welch-Satterthwaite degrees of freedom, here it is
    referred to the standard normal like the paired test (DeLong 1988; Hanley & McNeil 1983).
    The two p-values differ by well under 1% relative once each test set has ~100 cases.
    """
    check_options(alternative, alpha)
    ya = as_labels(y_a, "y_a")
    yb = as_labels(y_b, "y_b")
    a = as_scores(scores_a, "scores_a", len(ya), labels_name="y_a")
    b = as_scores(scores_b, "scores_b", len(yb), labels_name="y_b")
    pos_a, neg_a = class_counts(ya, "y_a")
    pos_b, neg_b = class_counts(yb, "y_b")

    auc_a, v10_a, v01_a = _placements(ya, a)
    auc_b, v10_b, v01_b = _placements(yb, b)
    var_a = _delong_variance(v10_a, v01_a)
    var_b = _delong_variance(v10_b, v01_b)
    return _result(
        auc_a,
        auc_b,
        var_a,
        var_b,
        var_a + var_b,
        alternative,
        alpha,
        pos_a + pos_b,
        neg_a + neg_b,
        paired=False,
    )


def auc_ci(y_true: Any, scores: Any, alpha: float = 0.05) -> tuple[float, float, float]:
    """AUC and its ``1 - alpha`` DeLong confidence interval: ``(auc, low, high)``.

    Normal approximation with the DeLong variance, clipped to [0, 1] (as pROC's ``ci.auc``).
    Near 0 or 1 the normal interval is crude; it is kept because it is the standard one and
    matches what reviewers reproduce with pROC.
    """
    check_options("two-sided", alpha)
    y = as_labels(y_true, "y_true")
    s = as_scores(scores, "scores", len(y))
    class_counts(y, "y_true")
    auc, v10, v01 = _placements(y, s)
    low, high = _normal_ci(auc, _delong_variance(v10, v01), alpha, clip=True)
    return auc, low, high


# --------------------------------------------------------------------------------------------
# computation


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong placement values via midranks (Sun & Xu 2014, eqs. 9-11).

    ``v10[i]`` is the fraction of negatives that positive ``i`` out-scores (ties count 1/2);
    ``v01[j]`` is the fraction of positives that out-score negative ``j``. The midrank of a
    case among all cases minus its midrank within its own class counts exactly the other-class
    cases below it (ties 1/2), which is what turns the O(m*n) pairwise sum into three sorts.
    """
    pos = scores[y == 1]
    neg = scores[y == 0]
    m, n = len(pos), len(neg)
    all_ranks = rankdata(np.concatenate([pos, neg]))  # "average" method = midranks
    v10 = (all_ranks[:m] - rankdata(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - rankdata(neg)) / m
    # mean(v10) == the Mann-Whitney AUC; sum over positives of (midrank - within-class rank)
    # divided by m*n, the classic rank-sum formula.
    auc = float(v10.mean())
    return auc, v10, v01


def _delong_variance(v10: np.ndarray, v01: np.ndarray) -> float:
    """DeLong variance ``S10/m + S01/n`` with unbiased (ddof=1) sample variances."""
    return float(np.var(v10, ddof=1) / len(v10) + np.var(v01, ddof=1) / len(v01))


def _result(
    auc_a: float,
    auc_b: float,
    var_a: float,
    var_b: float,
    var_diff: float,
    alternative: str,
    alpha: float,
    n_pos: int,
    n_neg: int,
    *,
    paired: bool,
) -> DelongResult:
    diff = auc_a - auc_b
    var_diff = max(var_diff, 0.0)  # guards against -1e-18 round-off, never hides a real value
    se = math.sqrt(var_diff)
    if se == 0.0:
        # Degenerate normal approximation. With no difference (identical rankings) there is no
        # evidence of any difference: z = 0, p = 1. With a difference but zero variance (e.g.
        # a perfect model against a constant one) the statistic is +-inf, as in pROC.
        z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0.0 else _p_value(z, alternative)
    else:
        z = diff / se
        p = _p_value(z, alternative)
    return DelongResult(
        auc_a=auc_a,
        auc_b=auc_b,
        auc_a_ci=_normal_ci(auc_a, var_a, alpha, clip=True),
        auc_b_ci=_normal_ci(auc_b, var_b, alpha, clip=True),
        difference=diff,
        difference_ci=_normal_ci(diff, var_diff, alpha, clip=False),
        se=se,
        z=z,
        p_value=p,
        alternative=alternative,
        n_positive=n_pos,
        n_negative=n_neg,
        paired=paired,
    )


def _p_value(z: float, alternative: str) -> float:
    if alternative == "greater":
        return float(norm.sf(z))
    if alternative == "less":
        return float(norm.cdf(z))
    return float(2.0 * norm.sf(abs(z)))


def _normal_ci(center: float, var: float, alpha: float, *, clip: bool) -> tuple[float, float]:
    half = float(norm.ppf(1.0 - alpha / 2.0)) * math.sqrt(max(var, 0.0))
    low, high = center - half, center + half
    if clip:
        low, high = max(low, 0.0), min(high, 1.0)
    return low, high
