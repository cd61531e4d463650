"""Does the model fit the design? Every factor that varies among the analyzed trials is either in the
mixed model's formula (a fixed effect), a random effect, or listed with the reason it is not, so no
varying knob is silently left out of a claim about the others."""

from __future__ import annotations

import pandas as pd

from analysis.formula_terms import factor_columns, parse_formula
from analysis.modeling import CONFIG_COLUMN
from tuner.schema import REPLICATE_KEYS

COVERAGE_COLUMNS = ["factor", "levels", "in the model", "why"]


def formula_columns(frame: pd.DataFrame, formula: str) -> set[str]:
    """The columns the formula's fixed effects read."""
    desc = parse_formula(formula, "formula")
    return {column for term in desc.rhs_termlist for factor in term.factors
            for column in factor_columns(factor.code, frame, "formula")}


def factor_coverage(frame: pd.DataFrame, params: list[str], formula: str, random: list[str]) -> pd.DataFrame:
    """One row per parameter that varies: its number of levels, how the model holds it (fixed effect,
    random effect, or not at all) and why."""
    fixed = formula_columns(frame, formula)
    if "log10_lr" in fixed:
        fixed.add("lr")  # log10_lr is lr, transformed
    rows = []
    for name in params:
        if name not in frame or frame[name].nunique(dropna=False) < 2:
            continue
        levels = int(frame[name].nunique(dropna=True))
        partial = bool(frame[name].isna().any())
        if name in fixed:
            held, why = "fixed effect", "in the formula"
        elif name in random:
            held, why = "random effect", "its levels are a sample of the population the claim is about"
        elif name in REPLICATE_KEYS:
            held, why = "replicate", ("it replicates a configuration: its variation is the residual, "
                                      "within-configuration variance")
        elif partial:
            held, why = "no", ("it applies to some trials only (nested in another factor): its effect lies in the "
                               "configuration random effect" if CONFIG_COLUMN in random else
                               "it applies to some trials only (nested in another factor); add it with --formula "
                               "inside the factor it belongs to, e.g. C(head):C(kernel_size)")
        elif CONFIG_COLUMN in random:
            held, why = "no", ("not in the formula: configurations that differ in it differ in their random "
                               "intercepts, so it is absorbed, not tested; add it with --formula to test it")
        else:
            held, why = "no", "not in the formula: its effect is left in the residual; add it with --formula"
        rows.append({"factor": name, "levels": levels, "in the model": held, "why": why})
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS)
