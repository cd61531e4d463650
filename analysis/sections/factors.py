"""Does each factor matter? Likelihood-ratio tests of whole factors, Holm-corrected."""

from __future__ import annotations

from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.modeling import likelihood_ratio_tests
from analysis.small_sample import FEW_GROUPS


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """ML fits with and without every term that reads a factor, chi-square reference, Holm across factors."""
    outcome = ctx.model()
    if outcome.plan is None:
        section.status = "failed"
        section.note(f"Not run: the mixed model above was not fitted ({outcome.error}).")
        return
    plan = outcome.plan
    table, notes = likelihood_ratio_tests(plan)
    if table.empty:
        section.note("The formula has no term to test.")
        return
    section.text(
        "Likelihood-ratio tests: the model is refitted by maximum likelihood (ML, not REML: REML "
        "likelihoods of models with different fixed effects are not comparable) without every term that "
        "reads the factor, on the same trials and random effects; LR = 2 (logLik full - logLik reduced) "
        "is referred to a chi-square with df = the number of coefficients removed. Holm's correction is "
        "across the factors."
    )
    few = [r for r in plan.random if plan.data[r].nunique() < FEW_GROUPS]
    if few:
        section.note(f"{', '.join(f'`{r}`' for r in few)} has fewer than {FEW_GROUPS} levels: the chi-square "
                     "reference is then anti-conservative; the mixed-model section's bootstrap p-values of the "
                     "single coefficients are the safer reading.")
    shown = table.rename(columns={"lr": "LR chi2", "p_holm": "Holm p"})
    shown.insert(0, "question", [f"Does {f} matter?" for f in table["factor"]])
    report.table(section, table, "likelihood_ratio_tests", "Does each factor matter at all?", shown=shown)
    for note in notes:
        section.note(note)


UNIT = SectionUnit("Does each factor matter?",
                   lambda ctx: "Does removing a factor from the model make the fit significantly worse?",
                   "conclusion", build)
