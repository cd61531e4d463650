"""Effect plots: the metric against the study's axis (and unfreeze depth), one line per head."""

from __future__ import annotations

import pandas as pd

from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.plots import metric_by_factor


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """One plot (and, for a discrete axis, one table of means) per axis that varies."""
    frame, metric, line = ctx.study.analyzed, ctx.config.metric, ctx.config.line
    if metric not in frame:
        section.skip(f"No `{metric}` column.")
        return
    shown = 0
    for x in ctx.config.xs:
        if x not in frame or frame[x].notna().sum() == 0:
            section.note(f"No plot against `{x}`: the trials have no `{x}`.")
            continue
        rows = frame[frame[x].notna() & frame[metric].notna()]
        if rows[x].nunique() < 2:
            section.note(f"No plot against `{x}`: it never varies (always {rows[x].iloc[0]!r}).")
            continue
        if len(rows) < len(frame):
            section.note(f"{len(frame) - len(rows)} trial(s) have no `{x}` (e.g. a strategy that does not use it) "
                         f"and are left out of the plot against `{x}`.")
        path = metric_by_factor(rows, x, report.folder / f"{metric}_by_{x}.png", metric=metric, line=line)
        discrete = rows[x].nunique() <= 12 or not pd.api.types.is_numeric_dtype(rows[x])
        per = f", per {line}" if line in rows and line != x else ""
        interval = " (mean and 95% t interval over trials, kept within [0, 1])" if discrete else ""
        report.image(section, path, f"How does {metric} move with {x}{per}?{interval}")
        if discrete:
            group = [x] + ([line] if per else [])
            summary = rows.groupby(group, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
            report.table(section, summary, f"{metric}_by_{x}", f"What is the mean {metric} at each {x}{per}?")
        shown += 1
    if not shown:
        section.status = "not applicable"


UNIT = SectionUnit("Effect plots", lambda ctx: f"How does {ctx.config.metric} move with "
                   f"{' and '.join(ctx.config.xs)}?", "conclusion", build)
