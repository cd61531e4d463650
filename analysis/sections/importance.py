"""Hyperparameter importance over the search's trials (Optuna's evaluators): exploratory by nature."""

from __future__ import annotations

from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.importance import param_importances
from analysis.plots import importance_bars


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """fANOVA and mean-decrease-in-impurity importances of the exploratory trials."""
    frame, metric = ctx.study.explore_analyzed, ctx.config.metric
    params = [p for p in ctx.loaded.param_columns if p != "dataset" or frame["dataset"].nunique() > 1]
    table, notes = param_importances(frame, params, metric)
    for note in notes:
        section.note(note)
    if table.empty:
        section.status = "not applicable"
        return
    section.text("Optuna's fANOVA and mean-decrease-in-impurity evaluators (random forests over the search's "
                 f"trials, seed 0), each normalised to sum to 1. `seed` is included where it varies: its importance "
                 f"is the share of variation in {metric} that noise alone explains. Importances say where the "
                 "search found variation, not which effects are real.")
    report.table(section, table, "importance", f"Which hyperparameters explain most of the variation in {metric}?")
    path = importance_bars(table, report.folder / "importance.png", metric)
    report.image(section, path, "Hyperparameter importance (fANOVA and mean decrease in impurity)")


UNIT = SectionUnit("Hyperparameter importance", lambda ctx: "Which hyperparameters explain most of the "
                   f"variation in {ctx.config.metric}?", "search", build)
