"""Tuning curves (analysis.tuning_curves): Dodge et al.'s expected maximum of n draws, checked against
the closed form on a hand-computed case and against enumerating every draw."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.tuning_curves import expected_max, max_weights, tuning_curve

VAL = [0.7, 0.9, 0.8]
TEST = [0.60, 0.85, 0.75]


def test_expected_max_equals_the_closed_form_by_hand():
    # sorted 0.7, 0.8, 0.9; weights (i/3)^2 - ((i-1)/3)^2 = 1/9, 3/9, 5/9
    assert list(max_weights(3, 2)) == pytest.approx([1 / 9, 3 / 9, 5 / 9])
    assert expected_max(VAL, 2) == pytest.approx((0.7 * 1 + 0.8 * 3 + 0.9 * 5) / 9)  # 0.84444
    assert expected_max(VAL, 1) == pytest.approx(np.mean(VAL))
    assert expected_max(VAL, 200) == pytest.approx(0.9, abs=1e-12)


def test_the_test_column_follows_the_validation_ordering():
    curve = tuning_curve(VAL, TEST).set_index("n")
    # the validation-best of two draws: its test score, 0.60 / 0.75 / 0.85 with weights 1/9, 3/9, 5/9
    assert curve.loc[2, "expected_test"] == pytest.approx((0.60 * 1 + 0.75 * 3 + 0.85 * 5) / 9)
    assert curve.loc[1, "expected_test"] == pytest.approx(np.mean(TEST))
    assert list(curve.index) == [1, 2, 3]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_curve_and_band_equal_enumerating_every_draw(n):
    val = [0.61, 0.70, 0.70, 0.82, 0.77]  # a tie on validation: broken at random
    test = [0.50, 0.66, 0.72, 0.70, 0.80]
    best_val, best_test = [], []
    for draw in itertools.product(range(len(val)), repeat=n):
        top = max(val[i] for i in draw)
        tied = sorted({i for i in draw if val[i] == top})
        best_val.append(top)
        best_test.append(np.mean([test[i] for i in tied]))
    row = tuning_curve(val, test, ns=[n]).iloc[0]
    assert row["expected_val"] == pytest.approx(np.mean(best_val))
    assert row["val_sd"] == pytest.approx(np.std(best_val))
    assert row["expected_test"] == pytest.approx(np.mean(best_test))


def test_missing_validation_scores_are_left_out():
    curve = tuning_curve([0.7, np.nan, 0.9], [0.6, 0.1, 0.8])
    assert list(curve["n"]) == [1, 2] and curve.iloc[0]["expected_test"] == pytest.approx(0.7)
