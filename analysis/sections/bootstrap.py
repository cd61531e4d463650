"""Seeds and test cases: would the AUC differences of the compared configurations hold if they were
trained again with other seeds *and* tested on other cases? (``analysis.replicate_bootstrap``)"""

from __future__ import annotations

import pandas as pd

from analysis import comparisons as cmp
from analysis.compared_models import class_problems, paired
from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.multiplicity import holm
from analysis.replicate_bootstrap import replicate_bootstrap
from analysis.sections.delong import specs


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """One row per compared pair and class: difference of mean AUCs over replicates, its bootstrap
    interval and p-value, Holm across the table."""
    frame = ctx.study.analyzed
    asked = specs(ctx, frame, [])  # a bad spec is the DeLong section's problem, reported there
    if not asked or frame["test_scores"].isna().all():
        section.skip("Nothing to compare (see the DeLong section).")
        return
    result = cmp.compare(frame, asked, ctx.loaded.test_scores, params=ctx.loaded.param_columns, mode="pooled",
                         select=ctx.config.select or "best_val_auc", test=False)
    rows, notes = [], []
    for (dataset, factor, _), models in result.models.items():
        reference = models[0]
        for model in models[1:]:
            if not paired(model, reference):
                notes.append(f"{dataset}: {factor} {model.level!r} and {reference.level!r} scored different test "
                             "cases: no paired bootstrap.")
                continue
            for name, k, y in class_problems(model.labels, model.multilabel, model.scores.shape[1]):
                if y.min() == y.max():
                    continue
                boot = replicate_bootstrap(y, model.replicates[:, :, k], reference.replicates[:, :, k],
                                           resamples=ctx.options.resamples, alpha=ctx.options.alpha)
                rows.append({"dataset": dataset, "factor": factor, "level": cmp.level_text(model.level),
                             "reference": cmp.level_text(reference.level), "class": name, **boot.as_dict()})
    if not rows:
        section.skip("No pair of compared configurations scored the same test cases.")
        return
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"])
    single = table[(table["replicates_a"] < 2) | (table["replicates_b"] < 2)]
    section.text(
        "Each level is its validation-best configuration, all its replicates kept apart. difference = mean AUC "
        "over A's replicates - mean over B's. The interval resamples each configuration's replicates (seeds, "
        "folds) and, jointly for both, the test cases (stratified by class); the test cases' seed-specific "
        "share is counted once, and the interval is widened for few replicates (Satterthwaite df). Unlike "
        "DeLong, which holds each trained model fixed, it answers: would the difference hold for a new training "
        f"run? {ctx.options.resamples} resamples; Holm's correction across the {len(table)} tests of the table."
    )
    if len(single):
        section.note(f"{len(single)} comparison(s) have a configuration with a single replicate: their intervals "
                     "count test cases only (no seed variance can be estimated from one run).")
    for note in result.notes + notes:
        section.note(note)
    shown = table[["dataset", "factor", "level", "reference", "class", "replicates_a", "replicates_b", "auc_a",
                   "auc_b", "difference", "ci_low", "ci_high", "p_value", "p_holm"]]
    shown = shown.rename(columns={"ci_low": "diff CI low", "ci_high": "diff CI high", "p_value": "p",
                                  "p_holm": "Holm p", "replicates_a": "runs A", "replicates_b": "runs B"})
    if table["class"].nunique() == 1:
        shown = shown.drop(columns=["class"])
    report.table(section, table, "bootstrap_seeds_cases",
                 "Would each difference hold for other seeds and other test cases?", shown=shown)


UNIT = SectionUnit("Seeds and test cases", lambda ctx: "Would the AUC differences hold if the configurations "
                   "were trained again with other seeds and tested on other cases?", "conclusion", build)
