"""How a mixed model is fitted once its design is known: the random-effects designs handed to
statsmodels, the optimizer strategy, the tidy fixed-effects table, and statsmodels' warnings turned
into plain-words notes."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import patsy
from scipy.stats import norm
from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec
from statsmodels.tools.sm_exceptions import (
    ConvergenceWarning,
    HessianInversionWarning,
    SingularMatrixWarning,
)

from analysis.formula_terms import drop_constant_terms

Z95 = float(norm.ppf(0.975))  # 1.959964...
TABLE_COLUMNS = ["term", "estimate", "se", "z", "p", "ci_low", "ci_high"]
# A variance this small relative to the residual variance is "zero": REML put it on the boundary.
_BOUNDARY_RATIO = 1e-4
# Tolerance on the gradient of the profile log-likelihood. statsmodels' default (1e-5) stops
# early on flat likelihoods: on dietox it leaves the pig variance 1e-4 away from lme4's optimum.
_GTOL = 1e-8
HESSIAN_NOTE = (
    "The likelihood is flat or curved the wrong way at the estimate (Hessian not positive "
    "definite), typically because a variance is ~0: the standard errors of the variance "
    "parameters are unreliable."
)


def group_codes(data: pd.DataFrame, groups: str | None) -> np.ndarray:
    """0-based group codes in order of appearance (all 0 without a groups column)."""
    if groups is None:
        return np.zeros(len(data), dtype=int)
    codes, _ = pd.factorize(data[groups], sort=False)
    return codes


def variance_components(
    vc_descs: dict[str, patsy.ModelDesc],
    data: pd.DataFrame,
    codes: np.ndarray,
    n_groups: int,
    env: patsy.EvalEnvironment,
    notes: list[str],
) -> VCSpec:
    """statsmodels' VCSpec, built as ``MixedLM.from_formula`` does: one design per group."""
    names, colnames, mats = [], [], []
    for name, desc in vc_descs.items():
        terms = drop_constant_terms(desc.rhs_termlist, data, notes, what=f"variance component {name!r}")
        if not terms:
            continue
        desc = patsy.ModelDesc([], terms)
        group_cols, group_mats = [], []
        for g in range(max(n_groups, 1)):
            part = data.iloc[np.flatnonzero(codes == g)]
            mat = patsy.dmatrix(desc, part, eval_env=env, NA_action="raise", return_type="dataframe")
            group_cols.append(list(mat.columns))
            group_mats.append(mat.to_numpy(dtype=float))
        if all(
            m.shape[1] == m.shape[0] and np.array_equal(m.sum(axis=1), np.ones(len(m))) for m in group_mats
        ):
            notes.append(
                f"every row has its own {name!r} level, so the {name!r} variance cannot be separated "
                "from the residual variance: the variance component was dropped"
            )
            continue
        names.append(name)
        colnames.append(group_cols)
        mats.append(group_mats)
    return VCSpec(names, colnames, mats)


def random_effects_design(
    re_desc: patsy.ModelDesc | None,
    data: pd.DataFrame,
    env: patsy.EvalEnvironment,
    notes: list[str],
) -> pd.DataFrame | None:
    """The per-group random-effects design of ``re_formula`` (None when there is none), constant terms dropped."""
    if re_desc is None:
        return None
    terms = drop_constant_terms(re_desc.rhs_termlist, data, notes, what="random slope")
    mat = patsy.dmatrix(
        patsy.ModelDesc([], terms), data, eval_env=env, NA_action="raise", return_type="dataframe"
    )
    return pd.DataFrame(mat.to_numpy(dtype=float), columns=list(mat.columns), index=data.index)



def optimize(model: MixedLM, reml: bool) -> tuple[Any, list[warnings.WarningMessage]]:
    """Best of several optimizers (each from scratch), then a high-precision polish from the winner.

    statsmodels tries bfgs, then lbfgs, then cg, each starting where the last stopped. On
    random-slope models bfgs often stalls far from the optimum and the chain can then
    "converge" to a worse point (on dietox with random slopes: REML log-likelihood -2220.4
    against lme4's -2217.05). So when bfgs does not converge, lbfgs and cg start afresh, the
    highest log-likelihood among converged runs wins, and a bfgs polish with a tight gradient
    tolerance removes the last 1e-4 of slack on flat likelihoods.
    """
    first = _attempt(model, reml, "bfgs")
    if first and first[0].converged and np.isfinite(first[0].llf):
        return first  # the common case: bfgs at the tight tolerance needs no second opinion
    runs = [first] if first else []
    runs += [run for method in ("lbfgs", "cg") if (run := _attempt(model, reml, method))]
    if not any(run[0].converged and np.isfinite(run[0].llf) for run in runs):
        # Typical at a variance of exactly 0: bfgs and cg cannot leave the starting point and
        # lbfgs lands on the boundary with an infinite log-likelihood. The derivative-free
        # methods walk to the boundary and report a finite likelihood there.
        runs += [run for method in ("powell", "nm") if (run := _attempt(model, reml, method))]
    if not runs:
        raise np.linalg.LinAlgError("every optimizer failed on a singular matrix")
    finite = [run for run in runs if np.isfinite(run[0].llf)] or runs
    best = max([run for run in finite if run[0].converged] or finite, key=lambda run: run[0].llf)
    polished = _attempt(model, reml, "bfgs", start_params=best[0].params_object)
    if polished and polished[0].converged and polished[0].llf >= best[0].llf - 1e-9 * abs(best[0].llf):
        return polished
    return best


def _attempt(
    model: MixedLM, reml: bool, method: str, start_params: Any = None
) -> tuple[Any, list[warnings.WarningMessage]] | None:
    """One optimizer run with its warnings recorded; None when it hits a singular matrix."""
    # Only bfgs and cg take a gradient tolerance; the others warn about an unused keyword.
    options = {"gtol": _GTOL} if method in ("bfgs", "cg") else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = model.fit(reml=reml, method=[method], start_params=start_params, **options)
        except np.linalg.LinAlgError:
            return None
    return result, list(caught)


def tidy_table(terms: list[str], estimate: np.ndarray, se: np.ndarray) -> pd.DataFrame:
    """Fixed effects with Wald z, two-sided p and 95% Wald intervals, one row per term."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = estimate / se
    return pd.DataFrame(
        {
            "term": terms,
            "estimate": estimate,
            "se": se,
            "z": z,
            "p": 2.0 * norm.sf(np.abs(z)),
            "ci_low": estimate - Z95 * se,
            "ci_high": estimate + Z95 * se,
        },
        columns=TABLE_COLUMNS,
    )


def warnings_to_notes(caught: list[warnings.WarningMessage], notes: list[str]) -> None:
    """statsmodels fit warnings become notes; anything else is re-issued unchanged."""
    for w in caught:
        message = str(w.message)
        if issubclass(w.category, (ConvergenceWarning, HessianInversionWarning, SingularMatrixWarning)):
            if "boundary of the parameter space" in message:
                # statsmodels flags any variance < 0.01 in absolute terms, which fires on every
                # AUC-scale fit; note_boundary checks relative to the residual variance instead.
                continue
            if "fail" in message or "Retrying" in message:
                continue  # non-convergence is reported once, in plain words, by _fit_mixed
            if "Hessian matrix at the estimated parameter values is not positive definite" in message:
                notes.append(HESSIAN_NOTE)
            else:
                notes.append(f"statsmodels warned: {message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def note_boundary(name: str, varies: str, variance: float, scale: float, notes: list[str]) -> None:
    """A note when a variance is ~0 relative to the residual variance (a singular fit, kept as is)."""
    if variance <= _BOUNDARY_RATIO * scale:
        notes.append(
            f"The {name} variance is estimated as ~0 (on the boundary, {variance:.3g}): the data show "
            f"no {varies} beyond residual noise. The fit is singular; it is kept as is."
        )




def variance_rows(result: Any, exog_re: pd.DataFrame | None, vc_spec: VCSpec, label: str,
                  notes: list[str]) -> list[tuple[str, float]]:
    """(name, variance) of every random-effect variance and covariance, each variance component and the
    residual, with a note for each variance on the boundary."""
    scale = float(result.scale)
    rows: list[tuple[str, float]] = []
    if exog_re is not None and exog_re.shape[1]:
        cov = np.asarray(result.cov_re)
        names = list(exog_re.columns)
        rows += [(f"{label} ({n})", float(cov[i, i])) for i, n in enumerate(names)]
        rows += [(f"{label} ({names[i]}, {names[j]}) covariance", float(cov[i, j]))
                 for i in range(len(names)) for j in range(i + 1, len(names))]
        for i, n in enumerate(names):
            varies = f"{label}-to-{label} variation" + ("" if n == "Intercept" else f" in {n}")
            note_boundary(f"{label} ({n})", varies, cov[i, i], scale, notes)
    for name, value in zip(vc_spec.names, np.atleast_1d(result.vcomp), strict=True):
        rows.append((name, float(value)))
        note_boundary(name, f"{name}-to-{name} variation", value, scale, notes)
    rows.append(("Residual", scale))
    if any("on the boundary" in note for note in notes):  # the boundary explains a flat Hessian
        notes[:] = [note for note in notes if note != HESSIAN_NOTE]
    return rows
