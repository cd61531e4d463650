"""What is optimistic: the validation scores of chosen trials. A chosen trial is the maximum over N
trials (and its score the maximum over its epochs), so its validation score is biased upward: the
winner's curse. Its test score, and above all fresh confirmation runs, say what to expect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.context import ReportContext, SectionUnit, all_search_trials
from analysis.document import Report, Section
from tuner.schema import REPLICATE_KEYS


def searched_factors(explore: pd.DataFrame, params: list[str]) -> list[str]:
    """The parameters the search varied (its configurations differ in them), replicates aside."""
    return [p for p in params if p in explore and p not in (*REPLICATE_KEYS, "dataset")
            and explore[p].nunique(dropna=False) > 1]


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The search's chosen trial per data set against the rest, and each confirmed configuration's search
    validation score against its fresh replicates' scores."""
    select, metric = ctx.config.select, ctx.config.metric
    explore, confirm = ctx.study.explore, ctx.study.analyzed if ctx.study.conclusive else ctx.study.confirm
    if select is None or explore.empty:
        section.skip("No validation score or no search trial: nothing was chosen.")
        return
    rows = []
    for dataset, part in explore.groupby("dataset", sort=True):
        part = part[part[select].notna()]
        if part.empty:
            continue
        best = part.loc[part[select].idxmax()]
        rows.append({"dataset": dataset, "chosen trial": best["run_name"], "trials": len(part),
                     f"chosen {select}": best[select], f"median {select}": float(part[select].median()),
                     f"chosen {metric}": best.get(metric, np.nan),
                     f"chosen {select} - {metric}": best[select] - best.get(metric, np.nan)})
    section.text(
        f"The chosen trial's `{select}` is the largest of its data set's trials, each itself the best of its "
        "epochs: a maximum over noisy scores, so it overstates what the configuration would score again (the "
        "winner's curse; the more trials, the larger). Never report it as the result: its test score is "
        "unbiased for that one trained model, and confirmation runs with fresh seeds for the configuration."
    )
    report.table(section, pd.DataFrame(rows), "optimism_chosen_trials",
                 "How far above the others, and above its own test score, is the chosen trial's validation score?")
    if confirm.empty:
        section.note("No confirmation runs: how much of the chosen validation scores a retraining keeps is unknown.")
        return
    factors = searched_factors(explore, ctx.loaded.param_columns)
    linked = []
    for (dataset, config), runs in confirm.groupby(["dataset", "config_id"], sort=True):
        part = explore[explore["dataset"] == dataset]
        found = part[part["config_id"] == config]
        if found.empty and factors:  # the confirmation stage may change the budget (e.g. no patience)
            first = runs.iloc[0]
            same = np.ones(len(part), dtype=bool)
            for factor in factors:
                same &= (part[factor] == first[factor]).to_numpy() | (part[factor].isna() & pd.isna(first[factor]))
            found = part[same]
        if found.empty:
            continue
        linked.append({"dataset": dataset, "configuration": runs.iloc[0]["run_name"].rsplit("-s", 1)[0],
                       f"search {select}": float(found[select].max()), "confirmation runs": len(runs),
                       f"confirmed {select}": float(runs[select].mean()),
                       f"confirmed {metric}": float(runs[metric].mean()) if metric in runs else np.nan})
    if not linked:
        section.note("No confirmed configuration could be matched to its search trials.")
        return
    table = pd.DataFrame(linked)
    table["optimism"] = table[f"search {select}"] - table[f"confirmed {select}"]
    report.table(section, table, "optimism_confirmed",
                 f"How much of each chosen configuration's search `{select}` do fresh seeds keep?")


UNIT = SectionUnit("What is optimistic", lambda ctx: "How much do the validation scores of the chosen trials "
                   "overstate what a retraining would score?", "search", build,
                   all_search_trials)
