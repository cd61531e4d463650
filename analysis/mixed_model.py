"""Linear mixed models for hyperparameter-search results, with plain-words notes instead of crashes.

Why mixed models: trials from a search share seeds, data sets and folds, so their scores are not
independent. Treating "seed" or "dataset" as a random effect absorbs that shared variation and
gives honest standard errors for the fixed effects one actually cares about (learning rate,
head, fine-tuning strategy, ...).

This wraps ``statsmodels`` ``MixedLM`` (the same model as R ``lme4::lmer``; REML by default), and
adds what a results table needs:

* a tidy fixed-effects table (Wald z, p, 95% CI) and a table of variance components;
* the reference level of every treatment-coded categorical, so "+0.02 for C(head)[T.mlp]" can be
  read as "+0.02 relative to head = 'linear'";
* designs that cannot estimate something produce a note and a smaller model, never a crash or a
  silently singular fit: a column that never varies, aliased terms, a grouping with fewer than two
  groups (falls back to OLS), a random-effect variance on the boundary (kept, with a note), and
  statsmodels convergence warnings (captured into ``notes``, not printed).

Design matrices are built here with patsy and handed to ``MixedLM`` as arrays, so what is fitted
is exactly what was checked, whatever formula engine statsmodels defaults to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
import statsmodels.api as sm
from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

from analysis.formula_terms import (
    EVAL_NAMESPACE,
    complete_rows,
    drop_aliased,
    drop_constant_terms,
    parse_formula,
    reference_levels,
    require_column,
    show,
    term_columns,
)
from analysis.mixed_fitting import (
    group_codes,
    optimize,
    random_effects_design,
    tidy_table,
    variance_components,
    variance_rows,
    warnings_to_notes,
)

__all__ = ["MixedDesign", "MixedModelFit", "crossed_random_effects", "fit_mixed_model"]


@dataclass(frozen=True)
class MixedDesign:
    """The arrays a mixed model was fitted from and its estimates, so that a parametric bootstrap
    (``analysis.small_sample``) simulates from, and refits, the very same model."""

    endog: np.ndarray
    exog: pd.DataFrame
    groups: np.ndarray
    exog_re: np.ndarray | None
    vc: VCSpec | None
    reml: bool
    fe_params: np.ndarray
    cov_re: np.ndarray | None
    vcomp: np.ndarray
    scale: float


@dataclass(frozen=True)
class MixedModelFit:
    """A fitted model, ready for a results table.

    Attributes:
        table: fixed effects, columns ``term, estimate, se, z, p, ci_low, ci_high``; Wald z tests
            and 95% Wald intervals (estimate +- 1.959964 * se), as statsmodels and lme4 report.
        random_effects: columns ``name, variance``: one row per random-effect variance
            (``"<groups> (<term>)"``), per covariance between random effects of one group
            (``"<groups> (<a>, <b>) covariance"``), per variance component (its ``vc_formula``
            key), and ``"Residual"`` last.
        notes: plain-words notes on anything dropped, any fallback, boundary or convergence
            problems; empty for a clean fit.
        converged: whether the optimizer converged (always True for the OLS fallback).
        formula: the fixed-effects formula actually fitted, after dropping terms.
        n_obs: rows used (after dropping rows with missing values in the model's columns).
        n_groups: number of groups of the grouping column (1 for the crossed design of
            ``crossed_random_effects``, 0 when no grouping column was given).
        llf: log-likelihood at the estimate: the REML criterion's log-likelihood when ``reml``
            (what lme4's ``logLik`` reports for a REML fit), else the ML log-likelihood.
        reml: True when fitted by REML; False for ML and for the OLS fallback.
        reference_levels: for each treatment-coded categorical (e.g. ``"C(head)"``), the level
            the other levels' estimates are relative to.
        design: the arrays and estimates of a mixed fit (None for the OLS fallback), for the
            parametric bootstrap.
    """

    table: pd.DataFrame
    random_effects: pd.DataFrame
    notes: list[str]
    converged: bool
    formula: str
    n_obs: int
    n_groups: int
    llf: float
    reml: bool
    reference_levels: dict[str, str]
    design: MixedDesign | None = field(default=None, repr=False, compare=False)


def fit_mixed_model(
    frame: pd.DataFrame,
    formula: str,
    groups: str | None = None,
    re_formula: str | None = None,
    vc_formula: dict[str, str] | None = None,
    reml: bool = True,
) -> MixedModelFit:
    """Fit ``formula`` with random effects by ``groups``, like ``statsmodels.formula.api.mixedlm``.

    Args:
        frame: one row per observation (e.g. per trial).
        formula: fixed effects, patsy syntax, e.g. ``"auc ~ np.log10(lr) + C(head)"``.
        groups: column whose levels are independent groups (e.g. ``"dataset"``). ``None``, or a
            column with fewer than two distinct values and no ``vc_formula``, fits OLS instead
            (with a note): a random effect cannot be estimated from a single group.
        re_formula: per-group random effects, e.g. ``"1 + epochs"`` for random intercepts and
            slopes. As in statsmodels: ``None`` means a random intercept when there is no
            ``vc_formula`` and no per-group random effect when there is one.
        vc_formula: variance components, e.g. ``{"seed": "0 + C(seed)"}``: one independent random
            effect per level, nested in ``groups``. With a constant ``groups`` column these are
            crossed random effects; see ``crossed_random_effects``.
        reml: REML (default, unbiased variance components, what lme4 uses by default) or ML
            (needed to compare models with different fixed effects by likelihood ratio).

    Raises:
        ValueError: the formula cannot be parsed, names a column that is not in ``frame``, has
            no response, the response never varies, or no row is complete.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame; got {type(frame).__name__}")
    notes: list[str] = []
    vc_formula = dict(vc_formula or {})

    fixed = parse_formula(formula, "formula")
    if not fixed.lhs_termlist:
        raise ValueError(
            f"formula {formula!r} has no response: put the outcome left of '~', e.g. 'auc ~ lr + C(head)'"
        )
    response_cols = term_columns(fixed.lhs_termlist, frame, "formula")
    fixed_cols = term_columns(fixed.rhs_termlist, frame, "formula")
    re_desc = parse_formula(re_formula, "re_formula") if re_formula is not None else None
    re_cols = term_columns(re_desc.rhs_termlist, frame, "re_formula") if re_desc else set()
    vc_descs = {name: parse_formula(f, f"vc_formula[{name!r}]") for name, f in vc_formula.items()}
    vc_cols = {
        name: term_columns(d.rhs_termlist, frame, f"vc_formula[{name!r}]") for name, d in vc_descs.items()
    }
    if groups is not None:
        require_column(groups, frame, "groups")

    used = sorted(response_cols | fixed_cols | re_cols | set().union(*vc_cols.values(), set()))
    used += [groups] if groups is not None and groups not in used else []
    data = complete_rows(frame, used, notes)

    for col in response_cols:
        if data[col].nunique(dropna=False) <= 1:
            raise ValueError(
                f"the response {col!r} never varies (always {show(data[col].iloc[0])}): "
                "there is nothing to model"
            )

    # Fixed effects: drop terms that involve a column that never varies, then aliased columns.
    rhs = drop_constant_terms(fixed.rhs_termlist, data, notes, what="effect")
    fixed = patsy.ModelDesc(fixed.lhs_termlist, rhs)
    env = patsy.EvalEnvironment([EVAL_NAMESPACE])
    y, x = patsy.dmatrices(fixed, data, eval_env=env, NA_action="raise", return_type="dataframe")
    kept = drop_aliased(x, notes)
    references = reference_levels(x.design_info, kept)
    x = x.loc[:, kept]
    if x.shape[1] == 0:
        raise ValueError(
            f"no fixed-effect term of {formula!r} is left to estimate (see the dropped terms: "
            f"{'; '.join(notes)}); add an intercept or a term that varies"
        )
    fitted_formula = fixed.describe()
    endog = y.iloc[:, 0]

    # Random effects: decide what can be estimated before handing anything to statsmodels.
    codes = group_codes(data, groups)
    n_groups = int(codes.max()) + 1 if groups is not None else 0
    vc_spec = variance_components(vc_descs, data, codes, n_groups, env, notes)
    exog_re = random_effects_design(re_desc, data, env, notes)
    if exog_re is not None and exog_re.shape[1] == 0 and vc_spec.names:
        exog_re = None  # "0": variance components only

    ols_reason = None
    if not vc_spec.names:
        if vc_descs and n_groups < 2:
            ols_reason = "no variance component is left to estimate"
        elif groups is None:
            ols_reason = "no groups column was given, so there is no random effect to estimate"
        elif n_groups < 2:
            shown = ", ".join(show(v) for v in pd.unique(data[groups])[:3])
            ols_reason = (
                f"groups column {groups!r} has only {n_groups} distinct value ({shown}): a random "
                "effect needs at least 2 groups, so it was omitted"
            )
        elif n_groups == len(data):
            ols_reason = (
                f"every {groups!r} group has a single row, so the between-group variance cannot be "
                "separated from the residual variance; the random effect was omitted"
            )
        elif exog_re is not None and exog_re.shape[1] == 0:
            ols_reason = f"re_formula {re_formula!r} leaves no random effect to estimate"
    elif exog_re is not None and exog_re.shape[1] and n_groups < 2:
        notes.append(
            f"re_formula {re_formula!r} was ignored: a per-group random effect needs at least 2 "
            "groups (the variance components are still estimated)"
        )
        exog_re = None

    if ols_reason is None:
        try:
            return _fit_mixed(
                endog, x, codes, exog_re, vc_spec, groups, reml, notes, fitted_formula, references
            )
        except np.linalg.LinAlgError as exc:
            ols_reason = f"the mixed model could not be fitted ({exc})"
    notes.append(f"{ols_reason}: fitted by ordinary least squares (fixed effects only).")
    return _fit_ols(endog, x, notes, fitted_formula, n_groups, references)


def crossed_random_effects(
    frame: pd.DataFrame, formula: str, factors: list[str], reml: bool = True
) -> MixedModelFit:
    """Fit ``formula`` with one crossed random intercept per column in ``factors``.

    E.g. ``factors=["seed", "dataset"]`` when every seed was run on every data set: seed and data
    set effects are crossed, not nested, so neither can be the statsmodels ``groups``. The
    standard statsmodels construction is used: a single group holding every row and one variance
    component ``"0 + C(<factor>)"`` per factor (a random intercept for each level).
    """
    if isinstance(factors, str) or not factors:
        raise ValueError(
            f"factors must be a non-empty list of column names, e.g. ['seed', 'dataset']; got {factors!r}"
        )
    if len(set(factors)) != len(factors):
        raise ValueError(f"factors lists a column twice: {factors!r}")
    for name in factors:
        require_column(name, frame, "factors")
    group_col = "_all_rows"
    while group_col in frame.columns:
        group_col += "_"
    vc = {name: f"0 + C({name})" if name.isidentifier() else f"0 + C(Q({name!r}))" for name in factors}
    return fit_mixed_model(
        frame.assign(**{group_col: 0}), formula, groups=group_col, vc_formula=vc, reml=reml
    )


def _fit_mixed(endog: pd.Series, x: pd.DataFrame, codes: np.ndarray, exog_re: pd.DataFrame | None,
               vc_spec: VCSpec, groups: str | None, reml: bool, notes: list[str], formula: str,
               references: dict[str, str]) -> MixedModelFit:
    if exog_re is None and not vc_spec.names:  # the default: a random intercept per group
        exog_re = pd.DataFrame({"Intercept": np.ones(len(x))}, index=x.index)
    vc = vc_spec if vc_spec.names else None
    model = MixedLM(endog, x, groups=codes, exog_re=exog_re, exog_vc=vc)
    result, caught = optimize(model, reml)
    warnings_to_notes(caught, notes)
    rows = variance_rows(result, exog_re, vc_spec, groups or "group", notes)
    k_fe = x.shape[1]
    table = tidy_table(list(x.columns), np.asarray(result.fe_params), np.asarray(result.bse_fe)[:k_fe])
    if not np.isfinite(table["se"]).all():
        bad = ", ".join(table.loc[~np.isfinite(table["se"]), "term"])
        notes.append(f"Standard errors could not be computed for: {bad} (the information matrix is singular).")
    if not result.converged:
        notes.append(
            "The optimizer did not converge (bfgs, lbfgs, cg, powell and nelder-mead were tried): "
            "the estimates are kept but may not be the optimum; a simpler random-effects "
            "structure may help."
        )
    has_re = exog_re is not None and exog_re.shape[1] > 0
    design = MixedDesign(
        endog=np.asarray(endog, dtype=float), exog=x, groups=codes,
        exog_re=np.asarray(exog_re, dtype=float) if has_re else None, vc=vc, reml=bool(result.reml),
        fe_params=np.asarray(result.fe_params, dtype=float), cov_re=np.asarray(result.cov_re) if has_re else None,
        vcomp=np.atleast_1d(np.asarray(result.vcomp, dtype=float)), scale=float(result.scale))
    return MixedModelFit(
        table=table, random_effects=pd.DataFrame(rows, columns=["name", "variance"]), notes=_dedupe(notes),
        converged=bool(result.converged), formula=formula, n_obs=int(model.nobs), n_groups=int(model.n_groups),
        llf=float(result.llf), reml=bool(result.reml), reference_levels=references, design=design)


def _fit_ols(endog: pd.Series, x: pd.DataFrame, notes: list[str], formula: str, n_groups: int,
             references: dict[str, str]) -> MixedModelFit:
    """OLS fallback, reported in the same shape (Wald z, like the mixed model's table)."""
    result = sm.OLS(endog, x).fit()
    table = tidy_table(list(x.columns), np.asarray(result.params), np.asarray(result.bse))
    return MixedModelFit(
        table=table, random_effects=pd.DataFrame([("Residual", float(result.scale))], columns=["name", "variance"]),
        notes=_dedupe(notes), converged=True, formula=formula, n_obs=int(result.nobs), n_groups=n_groups,
        llf=float(result.llf), reml=False, reference_levels=references)


def _dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))
