"""Cost: what the study and each of its arms cost, in wall time, CPU-seconds and GPU-seconds, from the
totals each trial reported (``tuner.training.cost``)."""

from __future__ import annotations

import pandas as pd

from analysis.context import CATEGORICAL_FACTORS, ReportContext, SectionUnit
from analysis.document import Report, Section
from tuner.schema import STAGES

COST_COLUMNS = {"cost_wall_s": "wall_s", "cost_cpu_s": "cpu_s", "cost_gpu_s": "gpu_s"}


def cost_factors(ctx: ReportContext) -> list[str]:
    """The factors a cost is totalled by: the study's arms, else its compared factors, else every
    categorical factor that varies across the trials."""
    frame = ctx.loaded.frame
    compared = [c.partition("=")[0].strip() for c in ctx.config.compare]
    chosen = ctx.config.arms or compared or [c for c in CATEGORICAL_FACTORS if c in frame and frame[c].nunique() > 1]
    return [f for f in dict.fromkeys(chosen) if f in frame]


def cost_tables(frame: pd.DataFrame, factors: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Totals per stage (and the whole study), and per stage and level of each factor (with each level's
    share of its stage's wall time): trials, wall-, CPU- and GPU-seconds."""
    costs = [c for c in COST_COLUMNS if c in frame]
    stages = sorted(frame["stage"].unique(), key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES))

    def totals(rows: pd.DataFrame) -> dict[str, float]:
        return {"trials": len(rows), **{COST_COLUMNS[c]: float(rows[c].sum(min_count=1)) for c in costs}}

    by_stage = [{"stage": stage, **totals(frame[frame["stage"] == stage])} for stage in stages]
    by_stage.append({"stage": "all", **totals(frame)})
    by_level = []
    for factor in factors:
        for stage in stages:
            part = frame[frame["stage"] == stage]
            wall = part["cost_wall_s"].sum() if "cost_wall_s" in part else 0.0
            for level, rows in part.groupby(part[factor].astype(str), sort=True):
                row = {"factor": factor, "level": level, "stage": stage, **totals(rows)}
                row["wall_share"] = row.get("wall_s", float("nan")) / wall if wall else float("nan")
                by_level.append(row)
    return pd.DataFrame(by_stage), pd.DataFrame(by_level)


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The study's totals by stage, and the totals of each level of the arm factors."""
    frame = ctx.loaded.frame
    if not any(c in frame for c in COST_COLUMNS):
        section.skip("The trials recorded no cost (they ran before medtune recorded one).")
        return
    factors = cost_factors(ctx)
    by_stage, by_level = cost_tables(frame, factors)
    section.text("Each trial records its running totals: `cost_wall_s` (wall time), `cost_cpu_s` (CPU time of its "
                 "process, every thread) and `cost_gpu_s` (the GPU fraction it held, `--gpus-per-trial`, times its "
                 "wall time). These are the sums over the finished trials, stopped ones included (each cost what it "
                 "ran); errored trials are not in the trials table and not counted.")
    report.table(section, by_stage, "cost", "What did the study cost, stage by stage?")
    if not by_level.empty:
        report.table(section, by_level, "cost_by_level",
                     f"What did each level of {', '.join(f'`{f}`' for f in factors)} cost?")


UNIT = SectionUnit("Cost", lambda ctx: "What did the study, and each of its arms, cost in compute?", "overview",
                   build)
