"""The fine-tuning-strategies study's tables (Davila et al., "Comparison of fine-tuning strategies
for transfer learning in medical image classification"), from any search whose trials have a
``strategy`` (several of them, ``ft`` among them for the comparisons) and a ``backbone``.

Each cell (data set, strategy, architecture) is represented by one configuration: the one with the
best mean validation AUC over its seeds (the paper tuned the learning rate per cell, then reported
the mean and standard error over three seeds). Every table works on whichever of the study's test
metrics the trials have (``STUDY_METRICS``).

- ``cell_table``: strategy x architecture, mean (SE over seeds) of each metric, per data set
  (the paper's Tables 3-10); the best strategy per architecture and metric is marked.
- ``change_vs_ft``: percentage change of the main metric relative to FT of the same architecture
  (Figures 6-11).
- ``wins_over_ft``: how often each strategy beats FT by more than 0.1% (Table 12).
- ``best_per_dataset``: the best strategy and architecture per data set (Table 11).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.loading import config_keys

STUDY_METRICS = ("test_auc", "test_map", "test_acc", "test_macro_acc", "test_kappa", "test_f1")
STRATEGY_ORDER = ("ft", "lp", "g_lf", "g_fl", "lp_ft", "l1_sp", "l2_sp", "auto_rgn", "topk")
REFERENCE = "ft"
WIN_THRESHOLD = 0.1  # percent, as Table 12
SELECT_METRIC = "best_val_auc"


def applies(frame: pd.DataFrame) -> str | None:
    """None when the tables can be made; else why not, in words."""
    if "strategy" not in frame:
        return "the trials have no `strategy` column."
    if "backbone" not in frame:
        return "the trials have no `backbone` column."
    if frame["strategy"].nunique() < 2:
        only = ", ".join(map(str, frame["strategy"].dropna().unique()))
        return f"a single strategy was run ({only}); the study compares several."
    if not study_metrics(frame):
        return f"the trials have none of the study's metrics ({', '.join(STUDY_METRICS)})."
    return None


def study_metrics(frame: pd.DataFrame) -> list[str]:
    """The study's metrics the trials reported, then the per-class test AUCs of a multi-class task
    (a binary task's two equal the overall AUC, so they would only repeat it)."""
    metrics = [m for m in STUDY_METRICS if m in frame and frame[m].notna().any()]
    per_class = sorted(
        (c for c in frame.columns if c.startswith("test_auc_c") and c[10:].isdigit()),
        key=lambda c: int(c[10:]),
    )
    if len(per_class) <= 2:  # a binary task's two one-vs-rest AUCs both equal test_auc
        per_class = []
    return metrics + [c for c in per_class if frame[c].notna().any()]


def strategy_order(strategies) -> list:
    """The strategies in the study's order (FT, the reference, first), unknown ones after, sorted:
    every table and plot lists them alike, so they read side by side."""
    known = [s for s in STRATEGY_ORDER if s in set(strategies)]
    return known + sorted(s for s in set(strategies) if s not in STRATEGY_ORDER)


def cells(frame: pd.DataFrame, params: list[str], select: str = SELECT_METRIC) -> pd.DataFrame:
    """Long table: dataset, strategy, backbone, metric, mean, se, n_seeds, config, trials."""
    metrics = study_metrics(frame)
    config_cols = [c for c in params if c in frame and c not in ("seed", "dataset", "strategy", "backbone")]
    rows = []
    for (dataset, strategy, backbone), part in frame.groupby(["dataset", "strategy", "backbone"], sort=True):
        key = config_keys(part, config_cols)
        if select in part and part[select].notna().any():
            means = part.groupby(key, sort=True)[select].mean()
            chosen = means.idxmax()
        else:
            chosen = key.iloc[0]
        members = part[key == chosen]
        for metric in metrics:
            values = members[metric].dropna().astype(float)
            rows.append(
                {
                    "dataset": dataset,
                    "strategy": strategy,
                    "backbone": backbone,
                    "metric": metric,
                    "mean": float(values.mean()) if len(values) else np.nan,
                    "se": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.nan,
                    "n_seeds": int(len(values)),
                    "trials": " ".join(members["run_name"].astype(str)) if "run_name" in members else "",
                }
            )
    return pd.DataFrame(
        rows, columns=["dataset", "strategy", "backbone", "metric", "mean", "se", "n_seeds", "trials"]
    )


def cell_table(long: pd.DataFrame, dataset) -> pd.DataFrame:
    """One data set's strategy x (architecture, metric) table of ``mean (SE)`` strings; the best
    strategy per architecture and metric in bold, the overall best per metric also marked †."""
    part = long[long["dataset"] == dataset]
    strategies = strategy_order(part["strategy"].unique())
    backbones = sorted(part["backbone"].unique())
    metrics = list(dict.fromkeys(part["metric"]))
    out = pd.DataFrame({"strategy": strategies})
    for backbone in backbones:
        for metric in metrics:
            cell = part[(part["backbone"] == backbone) & (part["metric"] == metric)].set_index("strategy")
            best = cell["mean"].max() if cell["mean"].notna().any() else np.nan
            overall = part.loc[part["metric"] == metric, "mean"].max()
            texts = []
            for strategy in strategies:
                if strategy not in cell.index or pd.isna(cell.loc[strategy, "mean"]):
                    texts.append("–")
                    continue
                mean, se = cell.loc[strategy, "mean"], cell.loc[strategy, "se"]
                text = f"{mean:.4f} ({se:.4f})" if pd.notna(se) else f"{mean:.4f} (–)"
                if mean == best and cell["mean"].notna().sum() > 1:
                    text = f"**{text}**"
                if mean == overall and len(backbones) > 1:
                    text += " †"
                texts.append(text)
            out[f"{backbone} {metric}"] = texts
    return out


def change_vs_ft(long: pd.DataFrame, metric: str) -> pd.DataFrame:
    """dataset, backbone, strategy, mean, ft_mean, change_pct = 100 (mean - FT) / FT."""
    part = long[long["metric"] == metric]
    ft = part[part["strategy"] == REFERENCE].set_index(["dataset", "backbone"])["mean"]
    rows = []
    for _, row in part[part["strategy"] != REFERENCE].iterrows():
        reference = ft.get((row["dataset"], row["backbone"]), np.nan)
        change = (
            100.0 * (row["mean"] - reference) / reference if pd.notna(reference) and reference else np.nan
        )
        rows.append(
            {
                "dataset": row["dataset"],
                "backbone": row["backbone"],
                "strategy": row["strategy"],
                "mean": row["mean"],
                "ft_mean": reference,
                "change_pct": change,
            }
        )
    return pd.DataFrame(rows, columns=["dataset", "backbone", "strategy", "mean", "ft_mean", "change_pct"])


def wins_over_ft(change: pd.DataFrame, threshold: float = WIN_THRESHOLD) -> pd.DataFrame:
    """Table 12: per strategy and architecture, the data sets where it beats FT by more than
    ``threshold`` percent; Total, cases compared, and Effectiveness (%) = wins / cases."""
    known = change[change["change_pct"].notna()]
    backbones = sorted(known["backbone"].unique())
    rows = []
    for strategy in strategy_order(known["strategy"].unique()):
        part = known[known["strategy"] == strategy]
        row = {"strategy": strategy}
        for backbone in backbones:
            row[backbone] = int((part.loc[part["backbone"] == backbone, "change_pct"] > threshold).sum())
        row["Total"] = int(sum(row[b] for b in backbones))
        row["cases"] = int(len(part))
        row["Effectiveness (%)"] = 100.0 * row["Total"] / row["cases"] if row["cases"] else np.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=["strategy", *backbones, "Total", "cases", "Effectiveness (%)"])
    if not table.empty:
        total = {"strategy": "Total", **{b: int(table[b].sum()) for b in backbones}}
        total.update({"Total": int(table["Total"].sum()), "cases": int(table["cases"].sum())})
        total["Effectiveness (%)"] = 100.0 * total["Total"] / total["cases"] if total["cases"] else np.nan
        table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    return table


def best_per_dataset(long: pd.DataFrame, change: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Table 11: per data set, the strategy and architecture with the best mean ``metric``, and its
    change relative to FT on the same architecture."""
    part = long[(long["metric"] == metric) & long["mean"].notna()]
    rows = []
    for dataset, group in part.groupby("dataset", sort=True):
        best = group.sort_values(["mean", "strategy", "backbone"], ascending=[False, True, True]).iloc[0]
        if best["strategy"] == REFERENCE:
            change_pct = 0.0
        else:
            match = change[
                (change["dataset"] == dataset)
                & (change["backbone"] == best["backbone"])
                & (change["strategy"] == best["strategy"])
            ]["change_pct"]
            change_pct = float(match.iloc[0]) if len(match) else np.nan
        rows.append(
            {
                "dataset": dataset,
                "backbone": best["backbone"],
                "strategy": best["strategy"],
                metric: best["mean"],
                "change_vs_ft_pct": change_pct,
            }
        )
    return pd.DataFrame(rows, columns=["dataset", "backbone", "strategy", metric, "change_vs_ft_pct"])
