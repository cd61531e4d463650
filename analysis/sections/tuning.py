"""Tuning curves: would more search budget have helped? Expected best validation score, and the test
score of the validation-best trial, against the number of trials (Dodge et al. 2019)."""

from __future__ import annotations

import pandas as pd

from analysis.context import ReportContext, SectionUnit, all_search_trials
from analysis.document import Report, Section
from analysis.plots import tuning_curves as plot_curves
from analysis.tuning_curves import tuning_curve

SHOWN_NS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """Per data set: the whole search's curve, and one per level of the first compared factor (else of
    the study's first arm factor): would more budget have helped each arm?"""
    select, metric, explore = ctx.config.select, ctx.config.metric, ctx.study.explore
    if select is None or explore.empty:
        section.skip("No validation score or no search trial: no tuning curve.")
        return
    compared = [c.partition("=")[0].strip() for c in ctx.config.compare]
    factor = next(iter(compared + ctx.config.arms), None)
    test = metric if metric in explore else None
    parts = []
    for dataset, part in explore.groupby("dataset", sort=True):
        groups = [("all trials", part)]
        if factor and factor in part and part[factor].nunique() > 1:
            groups += [(f"{factor}={level}", rows) for level, rows in part.groupby(factor, sort=True)]
        for name, rows in groups:
            curve = tuning_curve(rows[select], rows[test] if test else None)
            parts.append(curve.assign(dataset=dataset, group=name, trials=len(rows)))
    curves = pd.concat(parts, ignore_index=True)[["dataset", "group", "trials", "n", "expected_val", "val_sd",
                                                  "expected_test", "test_sd"]]
    section.text(
        f"For n of the search's N trials drawn at random, the expected best `{select}` (Dodge et al.'s expected "
        f"maximum over the empirical distribution of the N trials) and the expected `{metric}` of the trial that "
        "wins on validation, with a band of one standard deviation. A curve still rising at n = N says more trials "
        "would likely have found better configurations; a flat one, that the search had converged. The gap "
        "between the two curves is the validation score's optimism. Draws are taken as independent, which an "
        "adaptive searcher's are not: the curves describe this search's trials, all of them, stopped ones too "
        "(each cost a trial)."
    )
    whole = curves[curves["group"] == "all trials"]
    shown = whole[whole["n"].isin(SHOWN_NS) | (whole["n"] == whole["trials"])].drop(columns=["group"])
    report.table(section, curves, "tuning_curves", "How does the expected best score grow with the number of "
                 "trials?", shown=shown)
    path = plot_curves(curves, report.folder / "tuning_curves.png", metric, select)
    report.image(section, path, "Expected best validation and test score against the number of trials")


UNIT = SectionUnit("Tuning curves", lambda ctx: "Would more search budget have found a better configuration?",
                   "search", build,
                   all_search_trials)
