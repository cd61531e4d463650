"""Sensitivity to stopped trials: what pooling the search's unequal budgets would change. ASHA stops
trials on the very factors under test, so a trial stopped after 3 epochs and one that ran 30 differ in
budget as well as in configuration; this section shows the exploratory model three ways, so that
pooling is never silent."""

from __future__ import annotations

import pandas as pd
import patsy

from analysis.context import ReportContext, SectionUnit, all_search_trials
from analysis.document import Report, Section
from analysis.mixed_model import MixedModelFit
from analysis.modeling import fit_plan, plan_model, readable_term
from analysis.stages import STOPPED, is_stopped

BUDGET_TERM = "np.log2(epochs_trained)"


def variants(ctx: ReportContext) -> list[tuple[str, pd.DataFrame, str]]:
    """(name, trials, formula) of the three fits: complete budgets only, pooled, pooled with the budget
    (log2 of the epochs trained: ASHA's rungs are geometric) as a covariate."""
    explore, formula = ctx.study.explore, ctx.config.formula
    complete = explore[~is_stopped(explore)]
    return [("complete budgets only", complete, formula), ("pooled with stopped trials", explore, formula),
            ("pooled, budget as covariate", explore, f"{formula} + {BUDGET_TERM}")]


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The fixed effects of each variant side by side (estimate and 95% interval), and how many trials."""
    explore = ctx.study.explore
    stopped = is_stopped(explore)
    if explore.empty or not stopped.any():
        section.skip("No search trial was stopped early or diverged: every trial ran its whole budget, so there "
                     "is nothing to pool.")
        return
    rows, failures = [], []
    for name, frame, formula in variants(ctx):
        try:
            fit = _fit(ctx, frame, formula)
        except (ValueError, patsy.PatsyError) as error:
            failures.append(f"{name}: not fitted ({error})")
            continue
        for term in fit.table.itertuples():
            rows.append({"variant": name, "trials": len(frame), "term": readable_term(term.term, fit.reference_levels),
                         "estimate": term.estimate, "se": term.se, "ci_low": term.ci_low, "ci_high": term.ci_high,
                         "p": term.p})
    counts = ", ".join(f"{int((explore['outcome'] == o).sum())} {w}" for o, w in STOPPED.items()
                       if (explore["outcome"] == o).any())
    section.text(
        f"{int(stopped.sum())} of {len(explore)} search trials did not run their whole budget ({counts}). The "
        "exploratory analyses leave them out by default"
        + (" (here they are pooled: --include-stopped)" if ctx.study.include_stopped else "")
        + f". The same model, `{ctx.config.formula}`, fitted three ways: on complete budgets only; pooled with the "
        f"stopped trials; pooled with the budget (`{BUDGET_TERM}`) as a covariate. Where the estimates move, the "
        "search's stopping decisions are part of the effect, and only confirmation runs can tell them apart."
    )
    for failure in failures:
        section.note(failure)
    if not rows:
        return
    long = pd.DataFrame(rows)
    long["text"] = [f"{e:.4g} [{lo:.4g}, {hi:.4g}]" for e, lo, hi in zip(long["estimate"], long["ci_low"],
                                                                         long["ci_high"], strict=True)]
    shown = long.pivot_table(index="term", columns="variant", values="text", aggfunc="first", sort=False)
    order = [f"{name}" for name, *_ in variants(ctx) if name in shown.columns]
    shown = shown[order].reset_index()
    sizes = long.groupby("variant")["trials"].first()
    shown.columns = ["term"] + [f"{name} ({sizes[name]} trials)" for name in order]
    report.table(section, long.drop(columns="text"), "sensitivity_stopped_trials",
                 "How do the estimates change when stopped trials are pooled, with and without their budget?",
                 shown=shown)


def _fit(ctx: ReportContext, frame: pd.DataFrame, formula: str) -> MixedModelFit:
    """The variant's fit; without confirmation runs one variant is the exploratory mixed model itself
    (the same trials and formula), which the context has fitted already: reused, not fitted twice."""
    if not ctx.study.conclusive and formula == ctx.config.formula and frame.index.equals(ctx.study.analyzed.index):
        outcome = ctx.model()
        if outcome.fit is None:
            raise ValueError(outcome.error)
        return outcome.fit
    return fit_plan(plan_model(frame, formula, ctx.config.random, logit=ctx.options.logit))


UNIT = SectionUnit("Sensitivity to stopped trials", lambda ctx: "Would pooling the search's unequal budgets "
                   "change the estimates?", "search", build,
                   all_search_trials)
