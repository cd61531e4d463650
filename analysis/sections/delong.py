"""DeLong comparisons: are the AUC differences between the compared levels' models more than the chance
of drawing these test cases? (Each model is held fixed; the bootstrap section adds the seeds.)"""

from __future__ import annotations

import pandas as pd

from analysis import comparisons as cmp
from analysis.compared_models import roc_points
from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section, UserInputError
from analysis.plots import roc_curves

SHOWN = {"dataset": "dataset", "factor": "factor", "level": "level", "reference": "reference", "class": "class",
         "paired": "paired", "auc_a": "auc_a", "auc_b": "auc_b", "difference": "difference",
         "difference_ci_low": "diff CI low", "difference_ci_high": "diff CI high", "z": "z", "p_value": "p",
         "p_holm": "Holm p"}


def specs(ctx: ReportContext, frame: pd.DataFrame, problems: list[str],
          notes: list[str] | None = None) -> list[cmp.ComparisonSpec]:
    """The comparisons asked for (``--compare`` or the study's ``ANALYSIS``), else every default factor
    that varies; a spec that cannot be parsed is a problem. On confirmation runs, a level the search ran
    but the confirmation stage did not choose is left out with a note (it is not the user's mistake)."""
    parsed = []
    for text in ctx.config.compare:
        try:
            parsed.append(cmp.parse_compare(text))
        except ValueError as error:
            problems.append(str(error))
    if not ctx.config.compare:
        return [cmp.ComparisonSpec(f) for f in cmp.DEFAULT_FACTORS if f in frame and frame[f].nunique() > 1]
    if not ctx.study.conclusive:
        return parsed
    kept, explore = [], ctx.study.explore
    for spec in parsed:
        if spec.factor not in frame or not spec.levels:
            kept.append(spec)
            continue
        confirmed = {cmp.level_text(v) for v in frame[spec.factor].dropna().unique()}
        searched = {cmp.level_text(v) for v in explore[spec.factor].dropna().unique()} if spec.factor in explore \
            else set()
        dropped = [level for level in spec.levels if level not in confirmed and level in searched]
        levels = tuple(level for level in spec.levels if level not in dropped)
        if dropped and notes is not None:
            notes.append(f"--compare {spec}: {', '.join(dropped)} ran in the search but has no confirmation run, "
                         "so it is not compared" + ("" if len(levels) > 1 else "; fewer than two levels remain") + ".")
        if len(levels) > 1:
            kept.append(cmp.ComparisonSpec(spec.factor, levels))
    return kept


def representation(ctx: ReportContext, mode: str) -> str:
    """How each level is represented, in words."""
    select = ctx.config.select
    if mode == "best":
        return f"the best trial of each level by `{select}`"
    return (f"the best configuration of each level by mean `{select}` over its replicates, their test scores "
            "averaged per case")


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The DeLong table (Holm across it), each compared model's AUC with its CI, and the ROC curves."""
    frame, problems, notes = ctx.study.analyzed, [], []
    asked = specs(ctx, frame, problems, notes)
    for note in notes:
        section.note(note)
    if not asked and ctx.config.compare:
        section.skip("Nothing left to compare among the analyzed trials (see the notes).")
    elif not asked:
        section.skip("Nothing to compare: none of " + ", ".join(cmp.DEFAULT_FACTORS) + " varies. Name a factor "
                     "with --compare FACTOR[=LEVEL,LEVEL,...].")
    elif frame["test_scores"].isna().all():
        section.skip("Not run: no analyzed trial has per-sample test scores.")
    else:
        _compare(report, section, ctx, frame, asked, problems)
    if problems:
        raise UserInputError(" ".join(problems))


def _compare(report, section, ctx: ReportContext, frame, asked, problems) -> None:
    options, mode = ctx.options, ctx.compare_mode
    result = cmp.compare(frame, asked, ctx.loaded.test_scores, params=ctx.loaded.param_columns, mode=mode,
                         alternative=options.alternative, alpha=options.alpha,
                         select=ctx.config.select or "best_val_auc")
    problems += result.problems
    side = {"two-sided": "two-sided", "greater": "one-sided (A > reference)",
            "less": "one-sided (A < reference)"}[options.alternative]
    section.text(
        f"Each level is represented by {representation(ctx, mode)}. A = the level, B = the reference (the first "
        f"level listed, or the level of the overall best trial); difference = AUC_A - AUC_B; {side} tests at "
        f"alpha = {options.alpha:g}. Paired DeLong (Sun & Xu) when both models scored the same test cases, "
        "unpaired otherwise; multi-class tasks one-vs-rest per class. The ROC direction is fixed: a higher score "
        "means the positive class. Holm's correction runs across every test in the table "
        f"({len(result.table)}). DeLong holds each trained model fixed: it answers for these test images, not "
        "for a retraining with other seeds (the bootstrap section below)."
    )
    for note in result.notes:
        section.note(note)
    if result.table.empty:
        section.note("No comparison could be made (see the notes).")
        return
    shown = result.table[list(SHOWN)].rename(columns=SHOWN)
    if result.table["class"].nunique() == 1:
        shown = shown.drop(columns=["class"])
    report.table(section, result.table, "delong",
                 "Is each level's model better or worse than the reference's on the same test images?", shown=shown)
    aucs, panels = [], []
    for (dataset, factor, _), models in result.models.items():
        points = [(m, roc_points(m)) for m in models]
        for model, rocs in points:
            for name, _, _, (auc, low, high) in rocs:
                aucs.append({"dataset": dataset, "factor": factor, "level": cmp.level_text(model.level),
                             "class": name, "trials": " + ".join(model.trials), "auc": auc, "ci_low": low,
                             "ci_high": high})
        for cls in [name for name, *_ in points[0][1]][:4]:
            curves = [(f"{factor}={cmp.level_text(m.level)}", fpr, tpr, ci)
                      for m, rocs in points for name, fpr, tpr, ci in rocs if name == cls]
            suffix = f", class {cls}" if len(points[0][1]) > 1 else ""
            panels.append((f"{dataset}: {factor}{suffix}", curves))
    if aucs:
        report.table(section, pd.DataFrame(aucs), "compared_aucs",
                     "What is each compared model's test AUC, with its 95% DeLong CI?")
    if panels:
        path = roc_curves(panels[:9], report.folder / "roc_curves.png")
        report.image(section, path, "How do the compared models' ROC curves differ?")


UNIT = SectionUnit("DeLong comparisons", lambda ctx: "Are the AUC differences between the compared models more "
                   "than chance on these test images?", "conclusion", build)
