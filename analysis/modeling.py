"""The study's mixed model, planned from the data: which random effects can be estimated, an
optional logit of the response, likelihood-ratio tests of whole factors, and the paper-style table.

Random effects: the configuration (``config_id``, the unit that seeds and folds replicate) and the data
set by default. Configurations are nested in data sets (the same settings on another data set are
another unit). Each random effect that varies and repeats across trials is a random intercept; when
both do they are crossed (statsmodels variance components on one group, ``crossed_random_effects``),
which also fits nested levels. One that cannot be estimated (a single value, every trial its own level,
already a fixed effect) is left out with a note saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
from scipy.stats import chi2

from analysis.formula_terms import (
    EVAL_NAMESPACE,
    drop_aliased,
    drop_constant_terms,
    factor_columns,
    parse_formula,
    term_columns,
)
from analysis.mixed_model import MixedModelFit, crossed_random_effects, fit_mixed_model
from analysis.multiplicity import holm

CONFIG_COLUMN = "config_id"
DEFAULT_RANDOM = (CONFIG_COLUMN, "dataset")
LOGIT_EPS = 1e-3


@dataclass
class ModelPlan:
    """What will be fitted: the formula (after any logit), the rows, the random effects."""

    formula: str
    response: str
    data: pd.DataFrame
    random: list[str]
    notes: list[str] = field(default_factory=list)
    logit: bool = False


def with_response(formula: str, metric: str) -> str:
    """``formula`` with its response replaced by ``metric``."""
    _, sep, rhs = formula.partition("~")
    if not sep:
        raise ValueError(f"formula {formula!r} has no '~': write it as 'response ~ terms'")
    return f"{metric} ~ {rhs.strip()}"


def plan_model(
    frame: pd.DataFrame,
    formula: str,
    random: list[str] | tuple[str, ...] = DEFAULT_RANDOM,
    logit: bool = False,
) -> ModelPlan:
    """Check the formula against the frame, apply the logit, choose the random effects.

    Raises ValueError (with the message a user needs) for a formula that cannot be used.
    """
    notes: list[str] = []
    formula = _present_references(formula, frame, notes)
    desc = parse_formula(formula, "formula")
    if not desc.lhs_termlist:
        raise ValueError(f"formula {formula!r} has no response: write it as 'test_auc ~ C(head) + log10_lr'")
    response_cols = term_columns(desc.lhs_termlist, frame, "formula")
    fixed_cols = term_columns(desc.rhs_termlist, frame, "formula")
    response = formula.partition("~")[0].strip()
    data = frame.copy()
    if logit:
        if response not in frame.columns:
            raise ValueError(f"--logit needs a plain column as the response; got {response!r}")
        values = pd.to_numeric(frame[response], errors="coerce")
        if ((values < 0) | (values > 1)).any():
            raise ValueError(
                f"--logit: {response} has values outside [0, 1]; logit needs a proportion like AUC"
            )
        clipped = values.clip(LOGIT_EPS, 1 - LOGIT_EPS)
        n_clipped = int(((values < LOGIT_EPS) | (values > 1 - LOGIT_EPS)).sum())
        name = f"logit_{response}"
        data[name] = np.log(clipped / (1 - clipped))
        formula = with_response(formula, name)
        notes.append(
            f"The response is logit({response}) = log({response} / (1 - {response})), which spreads out "
            f"values near 1: estimates are changes in log-odds (exp(estimate) multiplies the odds)."
            + (
                f" {n_clipped} value(s) at 0 or 1 were clipped to [{LOGIT_EPS:g}, {1 - LOGIT_EPS:g}]."
                if n_clipped
                else ""
            )
        )
        response_cols = {name}
    used = sorted(response_cols | fixed_cols)
    if CONFIG_COLUMN in random and CONFIG_COLUMN in data and "dataset" in data and data["dataset"].nunique() > 1:
        data[CONFIG_COLUMN] = data["dataset"].astype(str) + "/" + data[CONFIG_COLUMN].astype(str)
    complete = data[used].notna().all(axis=1)
    rows = data[complete]
    chosen = []
    for name in dict.fromkeys(random):
        if name not in data.columns:
            notes.append(f"`{name}` is not a column, so it is not a random effect.")
        elif name in fixed_cols:
            notes.append(f"`{name}` is a fixed effect in the formula, so it is not also a random effect.")
        elif rows[name].notna().sum() < len(rows):
            notes.append(f"`{name}` is missing for some trials, so it is not a random effect.")
        elif rows[name].nunique() < 2:
            value = rows[name].iloc[0] if len(rows) else None
            notes.append(
                f"`{name}` takes a single value ({value!r}): there is no {name}-to-{name} variation to "
                "estimate, so it is not a random effect."
            )
        elif rows[name].nunique() == len(rows):
            notes.append(
                f"every trial has its own `{name}`, so its variance cannot be told apart from the residual; "
                "it is not a random effect."
            )
        else:
            chosen.append(name)
    if len(chosen) >= 2:
        notes.append(
            f"{' and '.join(f'`{c}`' for c in chosen)} vary together: crossed random intercepts "
            "(variance components)."
        )
    return ModelPlan(formula, response, data.loc[complete].reset_index(drop=True), chosen, notes, logit)


_TREATMENT = re.compile(r"C\(\s*(?P<col>[A-Za-z_]\w*)\s*,\s*Treatment\(\s*(?P<q>['\"])(?P<level>.*?)(?P=q)\s*\)\s*\)")


def _present_references(formula: str, frame: pd.DataFrame, notes: list[str]) -> str:
    """``C(col, Treatment('level'))`` as ``C(col)`` where no trial has that level (a study's reference
    arm that the confirmation stage did not choose): its first level is the reference then, with a note."""
    def replace(match: re.Match) -> str:
        col, level = match.group("col"), match.group("level")
        if col not in frame or level in {str(v) for v in frame[col].dropna().unique()}:
            return match.group(0)
        notes.append(f"The formula's reference level `{level}` of `{col}` has no analyzed trial: the first level "
                     "present is the reference instead.")
        return f"C({col})"

    return _TREATMENT.sub(replace, formula)


def fit_plan(plan: ModelPlan, reml: bool = True, formula: str | None = None) -> MixedModelFit:
    """Fit the plan's model (or ``formula`` on the plan's rows and random effects): crossed variance
    components when two random effects vary, one random intercept, or fixed effects only. One door,
    so the report's fit and the likelihood-ratio tests' full and reduced fits are the same model.
    ``reml=False`` gives the ML fits that likelihood-ratio tests must compare."""
    formula = formula or plan.formula
    if len(plan.random) >= 2:
        return crossed_random_effects(plan.data, formula, plan.random, reml=reml)
    return fit_mixed_model(plan.data, formula, groups=plan.random[0] if plan.random else None, reml=reml)


def likelihood_ratio_tests(plan: ModelPlan) -> tuple[pd.DataFrame, list[str]]:
    """For each column the fixed effects read: ML fits with and without every term that reads it;
    LR = 2 (llf_full - llf_reduced), chi-square with df = the number of coefficients dropped.

    Both fits use the same rows and random effects. Returns the table (factor, terms, df, lr, p,
    p_holm) and notes.
    """
    notes: list[str] = []
    desc = parse_formula(plan.formula, "formula")
    estimable = _estimable_terms(plan, desc)
    if len(estimable) < len(desc.rhs_termlist):  # an aliased term in both fits would distort the df
        desc = patsy.ModelDesc(desc.lhs_termlist, estimable)
    full = fit_plan(plan, reml=False, formula=desc.describe())
    rows = []
    columns: dict[str, list] = {}
    written: dict[str, list[str]] = {}  # the terms of the formula as written that read each column
    for term in parse_formula(plan.formula, "formula").rhs_termlist:
        for factor in term.factors:
            for column in sorted(factor_columns(factor.code, plan.data, "formula")):
                columns.setdefault(column, [])
                written.setdefault(column, []).append(term.name())
                if term not in columns[column] and term in desc.rhs_termlist:
                    columns[column].append(term)
    for column, terms in columns.items():
        kept = [t for t in desc.rhs_termlist if t not in terms]
        if not terms:
            notes.append(f"`{column}` cannot be tested: every term that reads it is aliased with other terms or "
                         "never varies, so the model holds no coefficient of it.")
            rows.append({"factor": column, "terms": ", ".join(dict.fromkeys(written[column])), "df": 0,
                         "lr": np.nan, "p": np.nan})
            continue
        reduced_formula = patsy.ModelDesc(desc.lhs_termlist, kept).describe()
        if not kept:
            reduced_formula = f"{plan.formula.partition('~')[0].strip()} ~ 1"
        reduced = fit_plan(plan, reml=False, formula=reduced_formula)
        df = len(full.table) - len(reduced.table)
        names = ", ".join(t.name() for t in terms)
        if df <= 0:
            notes.append(
                f"`{column}` cannot be tested: its terms ({names}) were dropped from the model (it never "
                "varies, or it is aliased with other terms)."
            )
            rows.append({"factor": column, "terms": names, "df": 0, "lr": np.nan, "p": np.nan})
            continue
        lr = max(2.0 * (full.llf - reduced.llf), 0.0)
        rows.append({"factor": column, "terms": names, "df": int(df), "lr": lr, "p": float(chi2.sf(lr, df))})
    table = pd.DataFrame(rows, columns=["factor", "terms", "df", "lr", "p"])
    table["p_holm"] = holm(table["p"]) if len(table) else []
    return table, notes


def _estimable_terms(plan: ModelPlan, desc: patsy.ModelDesc) -> list[patsy.Term]:
    """The formula's terms that keep at least one design column once constant terms and aliased columns
    are dropped (left to right, as the fit drops them): a term the others determine holds no coefficient."""
    varying = drop_constant_terms(desc.rhs_termlist, plan.data, [], what="effect")  # as the fit drops them
    env = patsy.EvalEnvironment([EVAL_NAMESPACE])
    x = patsy.dmatrix(patsy.ModelDesc([], varying), plan.data, eval_env=env, return_type="dataframe")
    kept = set(drop_aliased(x, []))
    return [term for term in varying if kept & set(x.columns[x.design_info.term_slices[term]])]


_CATEGORICAL = re.compile(r"^C\((?P<col>[A-Za-z_][A-Za-z0-9_]*)[^\[]*\)\[T\.(?P<level>.*)\]$")


_FACTOR_COLUMN = re.compile(r"^C\(([A-Za-z_][A-Za-z0-9_]*)")


def readable_term(term: str, references: dict[str, str]) -> str:
    """``C(head, Treatment('conv'))[T.linear]`` -> ``head = linear (vs conv)``."""
    match = _CATEGORICAL.match(term)
    if not match:
        return term
    col, level = match.group("col"), match.group("level")
    reference = next(
        (
            ref
            for name, ref in references.items()
            if _FACTOR_COLUMN.match(name) and _FACTOR_COLUMN.match(name).group(1) == col
        ),
        None,
    )
    return f"{col} = {level}" + (f" (vs {reference})" if reference is not None else "")


def paper_table(fit: MixedModelFit) -> pd.DataFrame:
    """The fixed effects as the ConvSkip paper's Table 5: term, estimate, SE, z, p, 95% CI."""
    table = fit.table
    return pd.DataFrame(
        {
            "Term": [readable_term(t, fit.reference_levels) for t in table["term"]],
            "Estimate": table["estimate"],
            "SE": table["se"],
            "z": table["z"],
            "p": table["p"],
            "95% CI": [
                f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
            ],
        }
    )
