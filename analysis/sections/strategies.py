"""Fine-tuning strategies: the strategies paper's tables, chosen on validation, reported on test with
intervals, on complete replicate sets."""

from __future__ import annotations

import re
from typing import Any

from analysis import strategy_tables as st
from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.plots import change_heatmap


def slug(value: Any) -> str:
    """A value as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))[:40]


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """Tables 3-12 of the paper from the analyzed trials."""
    frame = ctx.study.analyzed
    why = st.applies(frame)
    if why:
        section.skip(f"Not applicable: {why}")
        return
    select = ctx.config.select or "best_val_auc"
    long = st.cells(frame, ctx.loaded.param_columns, select=select)
    metrics = list(dict.fromkeys(long["metric"]))
    main = ctx.config.metric if ctx.config.metric in metrics else metrics[0]
    section.text(
        f"Each cell is the configuration with the best mean `{select}` over its replicates (chosen on "
        f"validation); mean (SE over replicates) of each test metric. Main metric: `{main}`. Bold: the "
        "validation-best strategy per architecture; ‡: a cell without the data set's complete replicate set, "
        "left out of the comparisons below. Test scores are reported, never used to choose."
    )
    report.csv(long, "strategy_cells")  # long form, with intervals; the per-data-set tables below show it
    for i, dataset in enumerate(sorted(long["dataset"].unique(), key=str)):
        report.table(section, st.cell_table(long, dataset), f"strategy_table_{i + 1}_{slug(dataset)}",
                     f"{dataset}: which strategy and architecture score best, and how much do replicates vary?")
    incomplete = long[~long["complete"] & (long["metric"] == main)]
    if len(incomplete):
        section.note(f"{len(incomplete)} cell(s) lack replicates the others have ("
                     + ", ".join(f"{r.dataset}: {r.strategy} / {r.backbone} ({r.replicates})"
                                 for r in incomplete.itertuples()) + "): flagged ‡ and left out of the comparisons.")
    if long["n_seeds"].max() < 2:
        section.note("Each cell has a single replicate, so there is no standard error or interval (–), and Table 12 "
                     "counts no win over FT (a win needs the interval of the difference above 0): a confirmation "
                     "stage with several seeds gives them.")
    change = st.change_vs_ft(long, main)
    if st.REFERENCE not in set(frame["strategy"]):
        section.note(f"No `{st.REFERENCE}` (full fine-tuning) trials: the change-vs-FT heatmap, Table 12 and the "
                     "improvements of Table 11 need them.")
    elif change["change_pct"].notna().any():
        report.table(section, change, "change_vs_ft", f"How much does each strategy change {main} relative to FT "
                     "on the same architecture (%, and the difference with its Welch 95% interval)?")
        path = change_heatmap(change, report.folder / "change_vs_ft_heatmap.png", main)
        report.image(section, path, f"Change in {main} relative to FT, per strategy and architecture")
        report.table(section, st.wins_over_ft(change), "wins_over_ft",
                     f"How often does each strategy beat FT by more than {st.WIN_THRESHOLD}% with the 95% interval "
                     f"of the difference above 0 ({main})?")
    else:
        section.note("No data set has FT and another strategy on the same architecture: nothing to compare.")
    report.table(section, st.best_per_dataset(long, change, main), "best_per_dataset",
                 "Which strategy and architecture is best on validation on each data set, and how does it score "
                 "on test?")


UNIT = SectionUnit("Fine-tuning strategies", lambda ctx: "Which fine-tuning strategy works best for each "
                   "architecture and data set, and how often does each beat full fine-tuning?", "conclusion", build)
