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

import ast
import builtins
import difflib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import patsy
import patsy.builtins
import statsmodels.api as sm
from scipy.stats import norm
from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec
from statsmodels.tools.sm_exceptions import (
    ConvergenceWarning,
    HessianInversionWarning,
    SingularMatrixWarning,
)

__all__ = ["MixedModelFit", "crossed_random_effects", "fit_mixed_model"]

_Z95 = float(norm.ppf(0.975))  # 1.959964...
_TABLE_COLUMNS = ["term", "estimate", "se", "z", "p", "ci_low", "ci_high"]
# Names a formula may use that are not columns: patsy's helpers (C, Q, I, Treatment, ...),
# numpy as np, and Python builtins (abs, ...).
_EVAL_NAMESPACE: dict[str, Any] = {"np": np, "numpy": np}
_KNOWN_NAMES = set(patsy.builtins.__all__) | set(_EVAL_NAMESPACE) | set(dir(builtins))
# A variance this small relative to the residual variance is "zero": REML put it on the boundary.
_BOUNDARY_RATIO = 1e-4
# Tolerance on the gradient of the profile log-likelihood. statsmodels' default (1e-5) stops
# early on flat likelihoods: on dietox it leaves the pig variance 1e-4 away from lme4's optimum.
_GTOL = 1e-8
_HESSIAN_NOTE = (
    "The likelihood is flat or curved the wrong way at the estimate (Hessian not positive "
    "definite), typically because a variance is ~0: the standard errors of the variance "
    "parameters are unreliable."
)


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

    fixed = _parse(formula, "formula")
    if not fixed.lhs_termlist:
        raise ValueError(
            f"formula {formula!r} has no response: put the outcome left of '~', e.g. 'auc ~ lr + C(head)'"
        )
    response_cols = _term_columns(fixed.lhs_termlist, frame, "formula")
    fixed_cols = _term_columns(fixed.rhs_termlist, frame, "formula")
    re_desc = _parse(re_formula, "re_formula") if re_formula is not None else None
    re_cols = _term_columns(re_desc.rhs_termlist, frame, "re_formula") if re_desc else set()
    vc_descs = {name: _parse(f, f"vc_formula[{name!r}]") for name, f in vc_formula.items()}
    vc_cols = {
        name: _term_columns(d.rhs_termlist, frame, f"vc_formula[{name!r}]") for name, d in vc_descs.items()
    }
    if groups is not None:
        _require_column(groups, frame, "groups")

    used = sorted(response_cols | fixed_cols | re_cols | set().union(*vc_cols.values(), set()))
    used += [groups] if groups is not None and groups not in used else []
    data = _complete_rows(frame, used, notes)

    for col in response_cols:
        if data[col].nunique(dropna=False) <= 1:
            raise ValueError(
                f"the response {col!r} never varies (always {_show(data[col].iloc[0])}): "
                "there is nothing to model"
            )

    # Fixed effects: drop terms that involve a column that never varies, then aliased columns.
    rhs = _drop_constant_terms(fixed.rhs_termlist, data, notes, what="effect")
    fixed = patsy.ModelDesc(fixed.lhs_termlist, rhs)
    env = patsy.EvalEnvironment([_EVAL_NAMESPACE])
    y, x = patsy.dmatrices(fixed, data, eval_env=env, NA_action="raise", return_type="dataframe")
    kept = _drop_aliased(x, notes)
    reference_levels = _reference_levels(x.design_info, kept)
    x = x.loc[:, kept]
    if x.shape[1] == 0:
        raise ValueError(
            f"no fixed-effect term of {formula!r} is left to estimate (see the dropped terms: "
            f"{'; '.join(notes)}); add an intercept or a term that varies"
        )
    fitted_formula = fixed.describe()
    endog = y.iloc[:, 0]

    # Random effects: decide what can be estimated before handing anything to statsmodels.
    codes = _group_codes(data, groups)
    n_groups = int(codes.max()) + 1 if groups is not None else 0
    vc_spec = _variance_components(vc_descs, data, codes, n_groups, env, notes)
    exog_re = _random_effects_design(re_desc, data, env, notes)
    if exog_re is not None and exog_re.shape[1] == 0 and vc_spec.names:
        exog_re = None  # "0": variance components only

    ols_reason = None
    if not vc_spec.names:
        if vc_descs and n_groups < 2:
            ols_reason = "no variance component is left to estimate"
        elif groups is None:
            ols_reason = "no groups column was given, so there is no random effect to estimate"
        elif n_groups < 2:
            shown = ", ".join(_show(v) for v in pd.unique(data[groups])[:3])
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
                endog, x, codes, exog_re, vc_spec, groups, reml, notes, fitted_formula, reference_levels
            )
        except np.linalg.LinAlgError as exc:
            ols_reason = f"the mixed model could not be fitted ({exc})"
    notes.append(f"{ols_reason}: fitted by ordinary least squares (fixed effects only).")
    return _fit_ols(endog, x, notes, fitted_formula, n_groups, reference_levels)


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
        _require_column(name, frame, "factors")
    group_col = "_all_rows"
    while group_col in frame.columns:
        group_col += "_"
    vc = {name: f"0 + C({name})" if name.isidentifier() else f"0 + C(Q({name!r}))" for name in factors}
    return fit_mixed_model(
        frame.assign(**{group_col: 0}), formula, groups=group_col, vc_formula=vc, reml=reml
    )


# --------------------------------------------------------------------------------------------
# fitting


def _fit_mixed(
    endog: pd.Series,
    x: pd.DataFrame,
    codes: np.ndarray,
    exog_re: pd.DataFrame | None,
    vc_spec: VCSpec,
    groups: str | None,
    reml: bool,
    notes: list[str],
    formula: str,
    reference_levels: dict[str, str],
) -> MixedModelFit:
    if exog_re is None and not vc_spec.names:  # the default: a random intercept per group
        exog_re = pd.DataFrame({"Intercept": np.ones(len(x))}, index=x.index)
    model = MixedLM(endog, x, groups=codes, exog_re=exog_re, exog_vc=vc_spec if vc_spec.names else None)

    result, caught = _optimize(model, reml)
    _warnings_to_notes(caught, notes)

    scale = float(result.scale)
    rows: list[tuple[str, float]] = []
    label = groups or "group"
    if exog_re is not None and exog_re.shape[1]:
        cov = np.asarray(result.cov_re)
        names = list(exog_re.columns)
        rows += [(f"{label} ({n})", float(cov[i, i])) for i, n in enumerate(names)]
        rows += [
            (f"{label} ({names[i]}, {names[j]}) covariance", float(cov[i, j]))
            for i in range(len(names))
            for j in range(i + 1, len(names))
        ]
        for i, n in enumerate(names):
            varies = f"{label}-to-{label} variation" + ("" if n == "Intercept" else f" in {n}")
            _note_boundary(f"{label} ({n})", varies, cov[i, i], scale, notes)
    for name, value in zip(vc_spec.names, np.atleast_1d(result.vcomp), strict=True):
        rows.append((name, float(value)))
        _note_boundary(name, f"{name}-to-{name} variation", value, scale, notes)
    rows.append(("Residual", scale))
    if any("on the boundary" in note for note in notes):  # the boundary explains a flat Hessian
        notes[:] = [note for note in notes if note != _HESSIAN_NOTE]

    k_fe = x.shape[1]
    table = _tidy_table(list(x.columns), np.asarray(result.fe_params), np.asarray(result.bse_fe)[:k_fe])
    if not np.isfinite(table["se"]).all():
        bad = ", ".join(table.loc[~np.isfinite(table["se"]), "term"])
        notes.append(
            f"Standard errors could not be computed for: {bad} (the information matrix is singular)."
        )
    if not result.converged:
        notes.append(
            "The optimizer did not converge (bfgs, lbfgs, cg, powell and nelder-mead were tried): "
            "the estimates are kept but may not be the optimum; a simpler random-effects "
            "structure may help."
        )
    return MixedModelFit(
        table=table,
        random_effects=pd.DataFrame(rows, columns=["name", "variance"]),
        notes=_dedupe(notes),
        converged=bool(result.converged),
        formula=formula,
        n_obs=int(model.nobs),
        n_groups=int(model.n_groups),
        llf=float(result.llf),
        reml=bool(result.reml),
        reference_levels=reference_levels,
    )


def _optimize(model: MixedLM, reml: bool) -> tuple[Any, list[warnings.WarningMessage]]:
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


def _fit_ols(
    endog: pd.Series,
    x: pd.DataFrame,
    notes: list[str],
    formula: str,
    n_groups: int,
    reference_levels: dict[str, str],
) -> MixedModelFit:
    """OLS fallback, reported in the same shape (Wald z, like the mixed model's table)."""
    result = sm.OLS(endog, x).fit()
    table = _tidy_table(list(x.columns), np.asarray(result.params), np.asarray(result.bse))
    return MixedModelFit(
        table=table,
        random_effects=pd.DataFrame([("Residual", float(result.scale))], columns=["name", "variance"]),
        notes=_dedupe(notes),
        converged=True,
        formula=formula,
        n_obs=int(result.nobs),
        n_groups=n_groups,
        llf=float(result.llf),
        reml=False,
        reference_levels=reference_levels,
    )


def _tidy_table(terms: list[str], estimate: np.ndarray, se: np.ndarray) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = estimate / se
    return pd.DataFrame(
        {
            "term": terms,
            "estimate": estimate,
            "se": se,
            "z": z,
            "p": 2.0 * norm.sf(np.abs(z)),
            "ci_low": estimate - _Z95 * se,
            "ci_high": estimate + _Z95 * se,
        },
        columns=_TABLE_COLUMNS,
    )


def _warnings_to_notes(caught: list[warnings.WarningMessage], notes: list[str]) -> None:
    """statsmodels fit warnings become notes; anything else is re-issued unchanged."""
    for w in caught:
        message = str(w.message)
        if issubclass(w.category, (ConvergenceWarning, HessianInversionWarning, SingularMatrixWarning)):
            if "boundary of the parameter space" in message:
                # statsmodels flags any variance < 0.01 in absolute terms, which fires on every
                # AUC-scale fit; _note_boundary checks relative to the residual variance instead.
                continue
            if "fail" in message or "Retrying" in message:
                continue  # non-convergence is reported once, in plain words, by _fit_mixed
            if "Hessian matrix at the estimated parameter values is not positive definite" in message:
                notes.append(_HESSIAN_NOTE)
            else:
                notes.append(f"statsmodels warned: {message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _note_boundary(name: str, varies: str, variance: float, scale: float, notes: list[str]) -> None:
    if variance <= _BOUNDARY_RATIO * scale:
        notes.append(
            f"The {name} variance is estimated as ~0 (on the boundary, {variance:.3g}): the data show "
            f"no {varies} beyond residual noise. The fit is singular; it is kept as is."
        )


# --------------------------------------------------------------------------------------------
# formula checks and design matrices


def _parse(formula: str, what: str) -> patsy.ModelDesc:
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(
            f"{what} must be a non-empty formula string, e.g. 'auc ~ lr + C(head)'; got {formula!r}"
        )
    try:
        return patsy.ModelDesc.from_formula(formula.strip())
    except patsy.PatsyError as exc:
        raise ValueError(f"could not parse {what} {formula!r}: {exc}") from None


def _term_columns(terms: list[patsy.Term], frame: pd.DataFrame, what: str) -> set[str]:
    """Columns the terms read; a name that is neither a column nor a known helper is an error."""
    columns: set[str] = set()
    for term in terms:
        for factor in term.factors:
            columns |= _factor_columns(factor.code, frame, what)
    return columns


def _factor_columns(code: str, frame: pd.DataFrame, what: str) -> set[str]:
    """Columns one patsy factor (e.g. ``"np.log10(lr)"``, ``"C(head)"``, ``'Q("lr x")'``) reads."""
    tree = ast.parse(code.strip(), mode="eval")
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    columns: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Q":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                columns.add(_require_column(node.args[0].value, frame, what))
        elif isinstance(node, ast.Name):
            if node.id in frame.columns and id(node) not in called:
                columns.add(node.id)
            elif node.id in _KNOWN_NAMES:
                continue
            elif id(node) in called:
                raise ValueError(
                    f"{what} calls {node.id}(), which is not a known function: use numpy through np "
                    f"(e.g. np.log10) or patsy's helpers (C, I, Q, center, standardize)"
                )
            else:
                _require_column(node.id, frame, what)
    return columns


def _require_column(name: str, frame: pd.DataFrame, what: str) -> str:
    if name in frame.columns:
        return name
    available = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(str(name), available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(repr(c) for c in available)
    raise ValueError(
        f"{what} names column {name!r}, which is not in the frame{hint} Available columns: {listing}"
    )


def _complete_rows(frame: pd.DataFrame, used: list[str], notes: list[str]) -> pd.DataFrame:
    data = frame.loc[:, used].copy()
    for col in used:  # patsy treats object columns as categorical, not pandas' string dtype
        if isinstance(data[col].dtype, pd.StringDtype):
            data[col] = data[col].astype(object)
    complete = data.notna().all(axis=1)
    if not complete.any():
        raise ValueError(
            f"no row has values in all of the model's columns ({', '.join(used)}): "
            "fill or drop the missing values"
        )
    if not complete.all():
        n_missing = int((~complete).sum())
        notes.append(f"Left out {n_missing} of {len(data)} rows with missing values in the model's columns.")
        data = data.loc[complete]
    return data.reset_index(drop=True)


def _drop_constant_terms(
    terms: list[patsy.Term], data: pd.DataFrame, notes: list[str], *, what: str
) -> list[patsy.Term]:
    """Drop every term that reads a column with a single value: it is aliased with the intercept."""
    constant: dict[str, Any] = {}
    term_cols: list[set[str]] = []
    for term in terms:
        cols = set().union(*(_factor_columns(f.code, data, "formula") for f in term.factors), set())
        term_cols.append(cols)
        for col in cols:
            if col not in constant and data[col].nunique(dropna=False) <= 1:
                constant[col] = data[col].iloc[0]
    if not constant:
        return list(terms)
    kept = [t for t, cols in zip(terms, term_cols, strict=True) if not cols & constant.keys()]
    for col, value in constant.items():
        dropped = [t.name() for t, cols in zip(terms, term_cols, strict=True) if col in cols]
        extra = f" (terms dropped: {', '.join(dropped)})" if len(dropped) > 1 else ""
        notes.append(
            f"{col} never varies (always {_show(value)}): its {what} cannot be estimated "
            f"and was dropped{extra}"
        )
    return kept


def _drop_aliased(x: pd.DataFrame, notes: list[str]) -> list[str]:
    """Names of the design columns to keep: each column that is a linear combination of earlier
    ones is dropped (left to right), with a note.

    Keeping the earlier column of an aliased pair keeps the formula's order meaningful: the term
    written first is estimated, the one that adds nothing is reported and dropped.
    """
    values = x.to_numpy(dtype=float)
    basis = np.zeros((len(x), 0))
    dropped: set[int] = set()
    for j in range(values.shape[1]):
        col = values[:, j]
        size = np.linalg.norm(col)
        resid = col - basis @ (basis.T @ col)
        resid -= basis @ (basis.T @ resid)  # second pass: classical Gram-Schmidt loses orthogonality
        if size == 0 or np.linalg.norm(resid) <= 1e-9 * size:
            dropped.add(j)
        else:
            basis = np.column_stack([basis, resid / np.linalg.norm(resid)])
    for term, cols in x.design_info.term_slices.items():
        gone = [str(x.columns[j]) for j in range(cols.start, cols.stop) if j in dropped]
        if not gone:
            continue
        if len(gone) == cols.stop - cols.start:
            notes.append(
                f"{term.name()} is completely determined by the other terms (aliased): its effect "
                "cannot be separated from theirs and it was dropped."
            )
        else:
            notes.append(
                f"{term.name()}: {', '.join(gone)} cannot be separated from the other terms (aliased, "
                "e.g. an empty cell in an interaction) and was dropped."
            )
    return [str(c) for j, c in enumerate(x.columns) if j not in dropped]


def _reference_levels(info: patsy.DesignInfo, kept: list[str]) -> dict[str, str]:
    """Reference level of each treatment-coded categorical main effect still in the design.

    Under treatment coding the reference level is the one whose row of the contrast matrix is all
    zeros; full-rank coding (no intercept) or sum coding has no such row and no reference.
    """
    levels: dict[str, str] = {}
    for term, cols in info.term_slices.items():
        if len(term.factors) != 1 or not set(kept) & set(info.column_names[cols]):
            continue
        factor = term.factors[0]
        factor_info = info.factor_infos[factor]
        if factor_info.type != "categorical":
            continue
        for subterm in info.term_codings[term]:
            matrix = np.asarray(subterm.contrast_matrices[factor].matrix)
            zero_rows = np.flatnonzero(~matrix.any(axis=1))
            if len(zero_rows) == 1:
                levels[factor.name()] = str(factor_info.categories[zero_rows[0]])
    return levels


def _group_codes(data: pd.DataFrame, groups: str | None) -> np.ndarray:
    if groups is None:
        return np.zeros(len(data), dtype=int)
    codes, _ = pd.factorize(data[groups], sort=False)
    return codes


def _variance_components(
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
        terms = _drop_constant_terms(desc.rhs_termlist, data, notes, what=f"variance component {name!r}")
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


def _random_effects_design(
    re_desc: patsy.ModelDesc | None,
    data: pd.DataFrame,
    env: patsy.EvalEnvironment,
    notes: list[str],
) -> pd.DataFrame | None:
    if re_desc is None:
        return None
    terms = _drop_constant_terms(re_desc.rhs_termlist, data, notes, what="random slope")
    mat = patsy.dmatrix(
        patsy.ModelDesc([], terms), data, eval_env=env, NA_action="raise", return_type="dataframe"
    )
    return pd.DataFrame(mat.to_numpy(dtype=float), columns=list(mat.columns), index=data.index)


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))
