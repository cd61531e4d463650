"""Tests for analysis.delong, checked against references that share no code with it.

References, in order of independence:

1. R pROC's own test suite on its ``aSAH`` data (tests/data/aSAH.csv, provenance in its header).
   Expected values are copied from xrobin/pROC on GitHub:
     tests/testthat/test-roc.test.R  -- roc.test() Z, p, CI of the difference (paired), D and p
                                        (unpaired), one-sided p; printed to 15 significant digits
     tests/testthat/test-auc.R       -- auc(r.wfns), auc(r.ndka)
     tests/testthat/test-var.R       -- var(r.wfns), var(r.ndka), var(r.s100b) (DeLong)
     tests/testthat/test-ci.auc.R    -- ci.auc(r.ndka) (DeLong)
   where tests/testthat/helper-rocs.R defines r.<marker> <- roc(aSAH$outcome, aSAH$<marker>);
   pROC's automatic direction is "<" (controls lower) for all three markers, the same as our
   fixed "higher score = positive" rule. The docs example (roc.test(r.wfns, r.s100b): Z = 2.209,
   p = 0.02718, AUCs 0.8237 / 0.7314) is the first row of PROC_PAIRED below.
2. MLstatkit 0.1.91 ``Delong_test`` (its own midrank code) on seeded random data with ties.
3. The O(m*n) structural-components definition of DeLong et al. (1988), written out below
   with no ranks at all.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from analysis.delong import DelongResult, auc_ci, delong_test, delong_unpaired

DATA = Path(__file__).parent / "data"
Z975 = norm.ppf(0.975)


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    frame = pd.read_csv(DATA / "aSAH.csv", comment="#")
    frame["y"] = (frame["outcome"] == "Poor").astype(int)
    assert len(frame) == 113 and frame["y"].sum() == 41  # pROC: 41 Poor, 72 Good
    return frame


def _textbook_delong(y: np.ndarray, *score_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix straight from DeLong, DeLong & Clarke-Pearson (1988).

    psi(X, Y) = 1 if the positive's score X beats the negative's score Y, 1/2 on a tie, else 0.
    V10(X_i) = mean over negatives of psi, V01(Y_j) = mean over positives of psi, AUC = mean psi,
    S10, S01 = sample covariance matrices (ddof=1) of the V10s and V01s, cov = S10/m + S01/n.
    """
    v10s, v01s, aucs = [], [], []
    for scores in score_sets:
        pos = scores[y == 1][:, None]
        neg = scores[y == 0][None, :]
        psi = (pos > neg) + 0.5 * (pos == neg)  # shape (m, n): every positive/negative pair
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = len(v10s[0]), len(v01s[0])
    s10 = np.atleast_2d(np.cov(np.vstack(v10s), ddof=1))
    s01 = np.atleast_2d(np.cov(np.vstack(v01s), ddof=1))
    return np.array(aucs), s10 / m + s01 / n


def _tied_scores(seed: int, n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated score vectors rounded to 1 decimal, so ties are frequent."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 3, int), np.zeros(n - n // 3, int)])
    a = np.round(0.9 * y + rng.normal(size=n), 1)
    b = np.round(0.6 * a + 0.4 * y + rng.normal(0.0, 0.8, size=n), 1)
    assert len(np.unique(a)) < n / 2  # ties really are there
    return y, a, b


# --------------------------------------------------------------------------------------------
# 1. R pROC on aSAH

# (marker_a, marker_b, Z, p, CI low, CI high) from test-roc.test.R "with defaults"
PROC_PAIRED = [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
]
# (marker_a, marker_b, D, p) from test-roc.test.R "unpaired roc.test statistic and p"
PROC_UNPAIRED = [
    ("wfns", "s100b", 1.43490640926908, 0.152825378808796),
    ("wfns", "ndka", 3.10125096778969, 0.00220950791756457),
    ("ndka", "s100b", -1.55995743389685, 0.120192832430845),
]
PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946}  # test-auc.R
PROC_VAR = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}
# test-ci.auc.R, in pROC's order (low, auc, high)
PROC_CI_NDKA = (0.501244999271703, 0.611957994579946, 0.722670989888189)
REL = 1e-9  # pROC prints 15 significant digits; our values agree to ~1e-14


@pytest.mark.parametrize(("a", "b", "z", "p", "low", "high"), PROC_PAIRED)
def test_paired_matches_proc_roc_test(asah, a, b, z, p, low, high):
    res = delong_test(asah["y"], asah[a], asah[b])
    assert res.z == pytest.approx(z, rel=REL)
    assert res.p_value == pytest.approx(p, rel=REL)
    assert res.difference_ci == pytest.approx((low, high), rel=REL)
    assert (res.n_positive, res.n_negative) == (41, 72)


def test_paired_docs_example_to_printed_precision(asah):
    # pROC documentation example as printed: Z = 2.209, p-value = 0.02718, AUCs 0.8237 / 0.7314
    res = delong_test(asah["y"], asah["wfns"], asah["s100b"])
    assert (round(res.z, 3), round(res.p_value, 5)) == (2.209, 0.02718)
    assert (round(res.auc_a, 4), round(res.auc_b, 4)) == (0.8237, 0.7314)


def test_one_sided_matches_proc(asah):
    # test-roc.test.R "one-sided roc.test work and produce expected results"
    greater = delong_test(asah["y"], asah["wfns"], asah["s100b"], alternative="greater")
    less = delong_test(asah["y"], asah["wfns"], asah["s100b"], alternative="less")
    assert greater.p_value == pytest.approx(0.0135878911145941, rel=REL)
    assert less.p_value == pytest.approx(0.986412108885406, rel=REL)
    assert greater.z == less.z == pytest.approx(2.20898359144091, rel=REL)


def test_auc_variance_and_ci_match_proc(asah):
    y = asah["y"]
    for marker, expected in PROC_AUC.items():
        assert auc_ci(y, asah[marker])[0] == pytest.approx(expected, rel=1e-12)
    auc, low, high = auc_ci(y, asah["ndka"])
    assert (low, auc, high) == pytest.approx(PROC_CI_NDKA, rel=REL)
    # The per-curve DeLong variances: an unpaired comparison has se^2 = var_a + var_b.
    for a, b in (("wfns", "s100b"), ("ndka", "s100b"), ("wfns", "ndka")):
        res = delong_unpaired(y, asah[a], y, asah[b])
        assert res.se**2 == pytest.approx(PROC_VAR[a] + PROC_VAR[b], rel=REL)
    # and each AUC interval in a result is auc +- z * sqrt(var)
    res = delong_test(y, asah["wfns"], asah["ndka"])
    half = Z975 * math.sqrt(PROC_VAR["wfns"])
    assert res.auc_a_ci == pytest.approx((PROC_AUC["wfns"] - half, PROC_AUC["wfns"] + half), rel=REL)


@pytest.mark.parametrize(("a", "b", "d", "p_proc"), PROC_UNPAIRED)
def test_unpaired_statistic_matches_proc(asah, a, b, d, p_proc):
    y = asah["y"].to_numpy()
    res = delong_unpaired(y, asah[a], y, asah[b])
    assert res.z == pytest.approx(d, rel=REL)
    assert res.p_value == pytest.approx(2 * norm.sf(abs(d)), rel=1e-12)
    assert not res.paired and (res.n_positive, res.n_negative) == (82, 144)
    # pROC refers D to Student t with Welch-Satterthwaite df (pROC R/delong.R,
    # delong.unpaired.test). Rebuilding that from the textbook per-curve variances reproduces
    # pROC's published p, so the statistic and variances are the same; only the reference
    # distribution differs (normal here), as documented in delong_unpaired.
    _, cov_a = _textbook_delong(y, asah[a].to_numpy(float))
    _, cov_b = _textbook_delong(y, asah[b].to_numpy(float))
    s_a, s_b = cov_a[0, 0], cov_b[0, 0]
    df = (s_a + s_b) ** 2 / (s_a**2 / (len(y) - 1) + s_b**2 / (len(y) - 1))
    assert 2 * student_t.sf(abs(d), df) == pytest.approx(p_proc, rel=REL)


def test_unpaired_one_sided_statistic_sign(asah):
    # pROC: unpaired "greater" p = 0.076412689404398 under t; here the normal tail of the same D.
    y = asah["y"]
    res = delong_unpaired(y, asah["wfns"], y, asah["s100b"], alternative="greater")
    assert res.p_value == pytest.approx(norm.sf(1.43490640926908), rel=REL)


# --------------------------------------------------------------------------------------------
# 2. MLstatkit on random data with ties


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_mlstatkit_with_ties(seed):
    from MLstatkit import Delong_test

    y, a, b = _tied_scores(seed)
    z_ref, p_ref, ci_a_ref, ci_b_ref, auc_a_ref, auc_b_ref, info = Delong_test(y, a, b, alpha=0.95)
    assert info["method"] == "delong"  # its bootstrap fallback would not be a reference
    res = delong_test(y, a, b)
    # MLstatkit signs its statistic as (AUC_B - AUC_A) / SE; ours is (AUC_a - AUC_b) / SE.
    assert res.z == pytest.approx(-z_ref, rel=1e-9)
    assert res.p_value == pytest.approx(p_ref, rel=1e-9)
    assert (res.auc_a, res.auc_b) == pytest.approx((auc_a_ref, auc_b_ref), rel=1e-12)
    assert res.auc_a_ci == pytest.approx(ci_a_ref, rel=1e-9)
    assert res.auc_b_ci == pytest.approx(ci_b_ref, rel=1e-9)


# --------------------------------------------------------------------------------------------
# 3. textbook O(m*n) DeLong, sklearn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_variance_equals_textbook_structural_components(seed):
    y, a, b = _tied_scores(seed)
    aucs, cov = _textbook_delong(y, a, b)
    res = delong_test(y, a, b)
    assert (res.auc_a, res.auc_b) == pytest.approx(tuple(aucs), rel=1e-12)
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert res.se**2 == pytest.approx(var_diff, rel=1e-10)
    assert res.z == pytest.approx((aucs[0] - aucs[1]) / math.sqrt(var_diff), rel=1e-10)
    half_a = Z975 * math.sqrt(cov[0, 0])
    assert res.auc_a_ci == pytest.approx((aucs[0] - half_a, aucs[0] + half_a), rel=1e-10)


def test_unpaired_variance_equals_textbook_on_different_test_sets():
    y_a, a, _ = _tied_scores(10, n=180)
    y_b, _, b = _tied_scores(11, n=301)  # different size and prevalence
    auc_a, var_a = _textbook_delong(y_a, a)
    auc_b, var_b = _textbook_delong(y_b, b)
    res = delong_unpaired(y_a, a, y_b, b)
    assert (res.auc_a, res.auc_b) == pytest.approx((auc_a[0], auc_b[0]), rel=1e-12)
    assert res.se**2 == pytest.approx(var_a[0, 0] + var_b[0, 0], rel=1e-10)
    assert res.z == pytest.approx((auc_a[0] - auc_b[0]) / res.se, rel=1e-12)
    assert (res.n_positive, res.n_negative) == (60 + 100, 120 + 201)


def test_auc_ci_variance_equals_textbook():
    y, a, _ = _tied_scores(5)
    auc, var = _textbook_delong(y, a)
    got_auc, low, high = auc_ci(y, a, alpha=0.1)
    half = norm.ppf(0.95) * math.sqrt(var[0, 0])
    assert (got_auc, low, high) == pytest.approx((auc[0], auc[0] - half, auc[0] + half), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aucs_equal_sklearn(seed):
    y, a, b = _tied_scores(seed)
    res = delong_test(y, a, b)
    assert abs(res.auc_a - roc_auc_score(y, a)) < 1e-12
    assert abs(res.auc_b - roc_auc_score(y, b)) < 1e-12
    assert abs(auc_ci(y, b)[0] - roc_auc_score(y, b)) < 1e-12


def test_large_input_runs_in_n_log_n():
    # 200k cases: the O(m*n) definition would need ~1e10 pairs; midranks take milliseconds.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200_000)
    a = np.round(y + rng.normal(size=y.size), 2)
    b = a + rng.normal(0, 0.5, size=y.size)
    res = delong_test(y, a, b)
    assert abs(res.auc_a - roc_auc_score(y, a)) < 1e-12
    assert res.z > 0 and res.p_value < 1e-6


# --------------------------------------------------------------------------------------------
# properties


def test_swapping_models_flips_z_and_keeps_two_sided_p():
    y, a, b = _tied_scores(7)
    ab, ba = delong_test(y, a, b), delong_test(y, b, a)
    assert ba.z == pytest.approx(-ab.z, rel=1e-12)
    assert ba.p_value == pytest.approx(ab.p_value, rel=1e-12)
    assert ba.difference == pytest.approx(-ab.difference, rel=1e-12)
    assert ba.difference_ci == pytest.approx((-ab.difference_ci[1], -ab.difference_ci[0]), rel=1e-12)
    assert (ba.auc_a, ba.auc_a_ci) == (ab.auc_b, ab.auc_b_ci)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_identical_scores_give_z_0_and_p_1(alternative):
    y, a, _ = _tied_scores(3)
    same = delong_test(y, a, a.copy(), alternative=alternative)
    assert same.z == 0.0 and same.p_value == 1.0
    assert same.se == 0.0 and same.difference == 0.0 and same.difference_ci == (0.0, 0.0)
    # a strictly increasing transform ranks the cases identically: still no difference
    ranked = delong_test(y, a, np.exp(3 * a), alternative=alternative)
    assert ranked.z == 0.0 and ranked.p_value == 1.0


def test_one_sided_p_is_half_the_two_sided_p_in_the_right_direction():
    y, a, b = _tied_scores(1)
    two = delong_test(y, a, b)
    assert two.z > 0  # A is the better model in this data
    greater = delong_test(y, a, b, alternative="greater")
    less = delong_test(y, a, b, alternative="less")
    assert greater.p_value == pytest.approx(two.p_value / 2, rel=1e-12)
    assert less.p_value == pytest.approx(1 - two.p_value / 2, rel=1e-12)
    # and the mirror image for B vs A
    assert delong_test(y, b, a, alternative="less").p_value == pytest.approx(two.p_value / 2, rel=1e-12)
    assert greater.alternative == "greater" and two.alternative == "two-sided"


def test_direction_is_never_flipped():
    y, a, _ = _tied_scores(2)
    auc, _, _ = auc_ci(y, a)
    flipped, low, high = auc_ci(y, -a)
    assert flipped == pytest.approx(1 - auc, rel=1e-12) and flipped < 0.5
    assert 0.0 <= low <= flipped <= high <= 1.0


def test_zero_variance_with_a_real_difference_is_infinite_z():
    # A perfect model against a constant one: every placement value is constant, so the DeLong
    # variance is 0 although the AUCs differ (1.0 vs 0.5). Like pROC: z = +inf, p = 0.
    y = np.array([0, 0, 0, 1, 1, 1])
    res = delong_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], np.full(6, 0.5))
    assert (res.auc_a, res.auc_b) == (1.0, 0.5)
    assert res.z == math.inf and res.p_value == 0.0
    reverse = delong_test(y, np.full(6, 0.5), [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], alternative="greater")
    assert reverse.z == -math.inf and reverse.p_value == 1.0


def test_bool_and_float_labels_are_accepted():
    y, a, b = _tied_scores(4)
    ref = delong_test(y, a, b)
    assert delong_test(y.astype(bool), a, b) == ref
    assert delong_test(y.astype(float), list(a), tuple(b)) == ref
    assert delong_test(pd.Series(y), pd.Series(a), pd.Series(b)) == ref


def test_as_dict_is_flat_for_tables():
    y, a, b = _tied_scores(0)
    res = delong_test(y, a, b, alpha=0.1)
    row = res.as_dict()
    assert row["difference_ci_low"] == res.difference_ci[0]
    assert row["auc_b_ci_high"] == res.auc_b_ci[1]
    assert not any(isinstance(v, tuple) for v in row.values())
    assert pd.DataFrame([row]).shape == (1, 13 + 3)  # 13 fields, 3 of them intervals
    assert isinstance(res, DelongResult)
    with pytest.raises(AttributeError):
        res.z = 0.0  # type: ignore[misc]  # frozen


def test_alpha_sets_the_interval_width():
    y, a, b = _tied_scores(6)
    r95, r80 = delong_test(y, a, b), delong_test(y, a, b, alpha=0.2)
    width95 = r95.difference_ci[1] - r95.difference_ci[0]
    width80 = r80.difference_ci[1] - r80.difference_ci[0]
    assert width80 / width95 == pytest.approx(norm.ppf(0.9) / Z975, rel=1e-12)
    assert r80.p_value == r95.p_value


# --------------------------------------------------------------------------------------------
# bad input

GOOD_Y = [0, 1, 0, 1, 0, 1]
GOOD_S = [0.1, 0.9, 0.3, 0.6, 0.4, 0.2]


@pytest.mark.parametrize(
    ("y", "a", "b", "kwargs", "message"),
    [
        (
            [0, 0, 0, 0],
            [0.1, 0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4],
            {},
            r"y_true has only one class \(all 0\): DeLong needs both positive and negative cases",
        ),
        ([1, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], {}, r"only one class \(all 1\)"),
        ([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], {}, r"at least 2 of each class"),
        ([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], {}, r"only 0/1 labels.*found 2"),
        (
            ["Good", "Poor", "Good", "Poor"],
            [0.1, 0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4],
            {},
            r"y_true must hold 0/1 labels.*Encode the positive class as 1",
        ),
        ([], [], [], {}, r"y_true is empty"),
        ([[0, 1], [1, 0]], GOOD_S, GOOD_S, {}, r"y_true must be 1-D"),
        (GOOD_Y, np.c_[GOOD_S, GOOD_S], GOOD_S, {}, r"scores_a must be 1-D.*proba\[:, 1\]"),
        (GOOD_Y, GOOD_S, GOOD_S[:-1], {}, r"scores_b has 5 scores but y_true has 6 labels"),
        (GOOD_Y, [0.1, np.nan, 0.3, 0.6, 0.4, 0.2], GOOD_S, {}, r"scores_a has 1 non-finite"),
        (GOOD_Y, GOOD_S, [0.1, np.inf, 0.3, 0.6, 0.4, 0.2], {}, r"scores_b has 1 non-finite"),
        (GOOD_Y, ["a", "b", "c", "d", "e", "f"], GOOD_S, {}, r"scores_a must be real numbers"),
        (GOOD_Y, GOOD_S, GOOD_S, {"alternative": "two.sided"}, r"alternative='two.sided' is not one of"),
        (GOOD_Y, GOOD_S, GOOD_S, {"alpha": 0.0}, r"alpha=0.0 must be a number strictly between 0 and 1"),
        (GOOD_Y, GOOD_S, GOOD_S, {"alpha": 1.5}, r"alpha=1.5"),
    ],
)
def test_paired_bad_input_messages(y, a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        delong_test(y, a, b, **kwargs)


def test_unpaired_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"scores_b has 5 scores but y_b has 6 labels"):
        delong_unpaired(GOOD_Y, GOOD_S, GOOD_Y, GOOD_S[:-1])
    with pytest.raises(ValueError, match=r"y_b has only one class \(all 1\)"):
        delong_unpaired(GOOD_Y, GOOD_S, [1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"y_a must hold only 0/1 labels"):
        delong_unpaired([0, 1, -1, 1], [1, 2, 3, 4], GOOD_Y, GOOD_S)


def test_auc_ci_bad_input():
    with pytest.raises(ValueError, match=r"y_true has only one class \(all 0\)"):
        auc_ci([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"scores has 2 scores but y_true has 3 labels"):
        auc_ci([0, 1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"alpha=2"):
        auc_ci(GOOD_Y, GOOD_S, alpha=2)
