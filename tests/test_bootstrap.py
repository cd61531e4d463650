"""The bootstrap over seeds and test cases (analysis.replicate_bootstrap): its weighted AUC equals the
AUC of the resampled cases, and on simulated confirmation runs with a known difference of expected AUCs
its 95% interval covers that difference at about the nominal rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from analysis.replicate_bootstrap import replicate_bootstrap, stratified_counts, weighted_aucs


def test_weighted_auc_is_the_auc_of_the_repeated_cases_ties_included():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(0, 1, (3, 60)) + y, 1)  # rounded: many ties
    counts = stratified_counts(y, 5, rng)
    got = weighted_aucs(y, scores, counts)
    for r in range(5):
        take = np.repeat(np.arange(60), counts[r].astype(int))
        for m in range(3):
            assert got[r, m] == pytest.approx(roc_auc_score(y[take], scores[m, take]), abs=1e-12)
        assert counts[r][y == 1].sum() == (y == 1).sum()  # stratified: class counts kept


def _simulate(rng, n=100, seeds=5, tau=0.15, noise=0.5, mu_a=1.2, mu_b=1.0):
    """Scores of two configurations' replicates on one fresh test set: a case effect shared by every
    model (the pairing), a seed effect on each replicate's signal (sd ``tau``), and each replicate's own
    per-case noise. Population AUC of a replicate: Phi((mu + u) / k) with k^2 = 2 (1 + noise^2)."""
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)]
    shared = rng.normal(0, 1, n)

    def replicates(mu):
        return np.array([(mu + rng.normal(0, tau)) * y + shared + rng.normal(0, noise, n) for _ in range(seeds)])

    return y, replicates(mu_a), replicates(mu_b)


def _truth(tau=0.15, noise=0.5, mu_a=1.2, mu_b=1.0):
    """The difference of expected AUCs over seeds and test sets: E[Phi((mu + u) / k)] = Phi(mu / sqrt(k^2 + tau^2))."""
    scale = np.sqrt(2 * (1 + noise**2) + tau**2)
    return norm.cdf(mu_a / scale) - norm.cdf(mu_b / scale)


@pytest.mark.parametrize("seeds", [3, 5])
def test_intervals_cover_a_known_difference_at_about_the_nominal_rate(seeds):
    rng = np.random.default_rng(seeds)
    truth = _truth()
    covered = 0
    for i in range(200):
        y, a, b = _simulate(rng, seeds=seeds)
        result = replicate_bootstrap(y, a, b, resamples=1000, seed=i)
        covered += result.ci_low <= truth <= result.ci_high
    print(f"coverage with {seeds} seeds: {covered / 200:.3f}")
    assert 0.90 <= covered / 200 <= 0.99


def test_seed_variance_widens_the_interval_beyond_a_test_cases_only_interval():
    rng = np.random.default_rng(1)
    y, a, b = _simulate(rng, seeds=5, tau=0.6)
    both = replicate_bootstrap(y, a, b, resamples=2000)
    one = replicate_bootstrap(y, a[:1], b[:1], resamples=2000)  # a single seed: test cases only
    assert one.df == np.inf and both.df < np.inf
    assert (both.ci_high - both.ci_low) > 1.5 * (one.ci_high - one.ci_low) / np.sqrt(5)
    assert both.difference == pytest.approx(
        np.mean([roc_auc_score(y, s) for s in a]) - np.mean([roc_auc_score(y, s) for s in b]))


def test_a_clear_difference_is_significant_and_none_is_not():
    rng = np.random.default_rng(2)
    y, a, b = _simulate(rng, n=300, seeds=5, mu_a=2.0, mu_b=0.8)
    assert replicate_bootstrap(y, a, b).p_value < 0.01
    y, a, b = _simulate(rng, n=300, seeds=5, mu_a=1.0, mu_b=1.0)
    same = replicate_bootstrap(y, a, a[::-1])
    assert same.difference == pytest.approx(0.0, abs=1e-12) and same.p_value > 0.5
