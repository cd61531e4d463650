"""Fixed effects of a mixed model with few groups: a parametric bootstrap instead of Wald z.

Wald z treats each standard error as known. With few configurations (the random effect's groups) the
configuration variance, and so every standard error, rests on a handful of group means, and Wald
intervals are too narrow (the reason lme4 gives no p-values and pbkrtest exists). Here the fitted model
is taken as the truth: new responses are simulated from its fixed effects, its random effects
(drawn afresh from the estimated variances) and its residual variance, the very same design is
refitted, and each coefficient's studentized deviation ``t* = (estimate* - estimate) / se*`` is kept.
The bootstrap-t interval ``estimate - q(1 - a/2) se, estimate - q(a/2) se`` and the p-value
``P(|t*| >= |z|)`` then carry the uncertainty of the variances as well as that of the estimates.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from statsmodels.regression.mixed_linear_model import MixedLM

from analysis.mixed_model import MixedDesign, MixedModelFit

FEW_GROUPS = 10  # fewer levels than this in a random effect: bootstrap the fixed effects
BOOT_COLUMNS = ["term", "estimate", "se", "boot_ci_low", "boot_ci_high", "boot_p"]


@dataclass(frozen=True)
class BootstrapTable:
    """Bootstrap-t intervals and p-values of the fixed effects, how many refits were used and how many
    failed (a singular or non-finite refit is skipped), and notes."""

    table: pd.DataFrame
    replicates: int
    failed: int
    notes: list[str] = field(default_factory=list)


def parametric_bootstrap(fit: MixedModelFit, replicates: int = 199, alpha: float = 0.05,
                         seed: int = 0) -> BootstrapTable:
    """The parametric bootstrap of the module docstring; needs a mixed fit (``fit.design``)."""
    design = fit.design
    if design is None:
        raise ValueError("the model was fitted by OLS (no random effect): there is nothing to bootstrap")
    rng = np.random.default_rng(seed)
    mean = design.exog.to_numpy(dtype=float) @ design.fe_params
    estimate = fit.table["estimate"].to_numpy(dtype=float)
    se = fit.table["se"].to_numpy(dtype=float)
    studentized, failed = [], 0
    for _ in range(replicates):
        y = mean + _random_part(design, rng) + rng.normal(0.0, math.sqrt(design.scale), len(mean))
        model = MixedLM(y, design.exog, groups=design.groups, exog_re=design.exog_re, exog_vc=design.vc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = model.fit(reml=design.reml, method=["bfgs", "lbfgs"])
                star, star_se = np.asarray(result.fe_params), np.asarray(result.bse_fe)[:len(estimate)]
            except (np.linalg.LinAlgError, ValueError):
                failed += 1
                continue
        if not (np.isfinite(star).all() and np.isfinite(star_se).all() and (star_se > 0).all()):
            failed += 1
            continue
        studentized.append((star - estimate) / star_se)
    notes = []
    if failed:
        notes.append(f"{failed} of {replicates} bootstrap refits failed (singular or non-finite) and were "
                     "left out.")
    t = np.array(studentized).reshape(-1, len(estimate))
    if len(t) < 20:
        nan = np.full(len(estimate), np.nan)
        notes.append(f"only {len(t)} bootstrap refits succeeded: too few for intervals.")
        low = high = p = nan
    else:
        q_low, q_high = np.quantile(t, [alpha / 2, 1 - alpha / 2], axis=0)
        low, high = estimate - q_high * se, estimate - q_low * se
        z = np.abs(estimate / se)
        p = (1 + (np.abs(t) >= z).sum(axis=0)) / (len(t) + 1)
    table = pd.DataFrame({"term": fit.table["term"], "estimate": estimate, "se": se, "boot_ci_low": low,
                          "boot_ci_high": high, "boot_p": p}, columns=BOOT_COLUMNS)
    return BootstrapTable(table, len(t), failed, notes)


def _random_part(design: MixedDesign, rng: np.random.Generator) -> np.ndarray:
    """One draw of every random effect, as the rows of the design see it."""
    values = np.zeros(len(design.endog))
    groups = np.unique(design.groups)
    if design.exog_re is not None:
        cov = np.atleast_2d(design.cov_re)
        effects = rng.multivariate_normal(np.zeros(len(cov)), cov, size=len(groups), method="eigh")
        for g, effect in zip(groups, effects, strict=True):
            rows = design.groups == g
            values[rows] += design.exog_re[rows] @ effect
    if design.vc is not None:
        for k, variance in enumerate(design.vcomp):
            for g in groups:
                rows = np.flatnonzero(design.groups == g)
                matrix = design.vc.mats[k][int(g)]
                values[rows] += matrix @ rng.normal(0.0, math.sqrt(max(variance, 0.0)), matrix.shape[1])
    return values
