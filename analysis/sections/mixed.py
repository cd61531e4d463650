"""Mixed model: which factors change the metric, holding the others fixed, with the configuration as
the random effect that its replicates repeat, and a parametric bootstrap where groups are few."""

from __future__ import annotations

from analysis.context import ReportContext, SectionUnit
from analysis.design import factor_coverage
from analysis.document import Report, Section, UserInputError
from analysis.modeling import paper_table
from analysis.small_sample import FEW_GROUPS, parametric_bootstrap

TEST_SET_WORDS = ("These results hold on this test set: the test cases are fixed, so the variances count "
                  "configurations and replicates, not the sampling of test images (the DeLong and bootstrap "
                  "sections count those).")


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The fit, the factors it holds and why, its variances, and the bootstrap-t when groups are few."""
    outcome = ctx.model()
    if outcome.fit is None:
        raise UserInputError(f"Not fitted: {outcome.error}")
    plan, fit = outcome.plan, outcome.fit
    random = " + ".join(f"(1 | {r})" for r in plan.random) if plan.random else "none (fixed effects only)"
    references = "; ".join(f"{term}: `{level}`" for term, level in fit.reference_levels.items())
    section.text(
        f"Formula `{fit.formula}` ({ctx.config.formula_source}); random intercepts: {random}; "
        f"{'REML' if fit.reml else 'ML (OLS: no random effect)'}; {fit.n_obs} trials. The configuration "
        "(`config_id`: every setting but the seed and fold) is the unit its replicates repeat, so its random "
        "intercept carries the between-configuration variation the fixed effects do not explain."
        + (f"\n\nReference levels (each estimate is relative to these): {references}." if references else "")
    )
    for note in plan.notes + fit.notes:
        section.note(note)
    coverage = factor_coverage(plan.data, ctx.loaded.param_columns, plan.formula, plan.random)
    report.table(section, coverage, "mixed_model_factors",
                 "Is every factor that varies in the model, and if not, why not?")
    shown = paper_table(fit)
    levels = {r: int(plan.data[r].nunique()) for r in plan.random}
    few = {r: n for r, n in levels.items() if n < FEW_GROUPS}
    table = fit.table
    if few and fit.design is not None and ctx.options.refits > 0:
        boot = parametric_bootstrap(fit, ctx.options.refits, ctx.options.alpha)
        table = fit.table.merge(boot.table[["term", "boot_ci_low", "boot_ci_high", "boot_p"]], on="term")
        shown["bootstrap 95% CI"] = [f"[{lo:.4g}, {hi:.4g}]" for lo, hi in
                                     zip(boot.table["boot_ci_low"], boot.table["boot_ci_high"], strict=True)]
        shown["bootstrap p"] = boot.table["boot_p"].to_numpy()
        which = ", ".join(f"`{r}` ({n} levels)" for r, n in few.items())
        section.text(
            f"Few groups: {which}. Wald z treats the standard errors as known, and with fewer than {FEW_GROUPS} "
            f"groups they are not, so the table adds a parametric bootstrap ({boot.replicates} refits of "
            "responses simulated from the fitted model): bootstrap-t intervals and p-values that also carry the "
            "uncertainty of the variances. Read those, not the Wald columns."
        )
        for note in boot.notes:
            section.note(note)
    report.table(section, table, "mixed_model",
                 f"How much does each term change {f'logit({plan.response})' if plan.logit else plan.response}, "
                 "and how sure is that?", shown=shown)
    report.table(section, fit.random_effects, "mixed_model_variances",
                 "How much of the variation lies between configurations / data sets, and how much between "
                 "replicates (residual)?")
    section.text(TEST_SET_WORDS)


def _question(ctx: ReportContext) -> str:
    return f"Which factors change {ctx.config.metric}, holding the others fixed?"


UNIT = SectionUnit("Mixed model", _question, "conclusion", build)

