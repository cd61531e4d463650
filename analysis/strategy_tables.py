"""The fine-tuning-strategies study's tables (Davila et al., "Comparison of fine-tuning strategies
for transfer learning in medical image classification"), from any trials that have a ``strategy``
(several of them, ``ft`` among them for the comparisons) and a ``backbone``.

Everything is *chosen on validation and reported on test*: each cell (data set, strategy,
architecture) is represented by the configuration with the best mean validation score over its
replicates, and "best per data set" is the cell with the best mean validation score. Test metrics are
reported, never used to choose. Every test mean comes with a 95% t interval over the replicates, and a
cell counts only with the data set's complete replicate set (the seeds, or seed x fold pairs, that the
data set's cells ran): a cell with fewer is flagged and left out of the comparisons, since a mean over
other seeds is not comparable.

- ``cell_table``: strategy x architecture, mean (SE) of each metric, per data set (Tables 3-10); bold:
  the validation-best strategy per architecture; ‡: an incomplete replicate set.
- ``change_vs_ft``: change of the main metric relative to FT on the same architecture, in % and as a
  difference with its Welch 95% interval (Figures 6-11).
- ``wins_over_ft``: how often each strategy beats FT: by more than 0.1% *and* with the interval of the
  difference above 0 (Table 12).
- ``best_per_dataset``: the validation-best strategy and architecture per data set, its test score with
  its interval (Table 11).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from analysis.loading import config_keys
from tuner.schema import REPLICATE_KEYS

STUDY_METRICS = ("test_auc", "test_map", "test_acc", "test_macro_acc", "test_kappa", "test_f1")
STRATEGY_ORDER = ("ft", "lp", "g_lf", "g_fl", "lp_ft", "l1_sp", "l2_sp", "auto_rgn", "topk")
REFERENCE = "ft"
WIN_THRESHOLD = 0.1  # percent, as Table 12
SELECT_METRIC = "best_val_auc"
CELL_COLUMNS = ["dataset", "strategy", "backbone", "metric", "val_mean", "mean", "se", "ci_low", "ci_high",
                "n_seeds", "complete", "replicates", "trials"]


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
    per_class = sorted((c for c in frame.columns if c.startswith("test_auc_c") and c[10:].isdigit()),
                       key=lambda c: int(c[10:]))
    if len(per_class) <= 2:  # a binary task's two one-vs-rest AUCs both equal test_auc
        per_class = []
    return metrics + [c for c in per_class if frame[c].notna().any()]


def strategy_order(strategies) -> list:
    """The strategies in the study's order (FT, the reference, first), unknown ones after, sorted:
    every table and plot lists them alike, so they read side by side."""
    known = [s for s in STRATEGY_ORDER if s in set(strategies)]
    return known + sorted(s for s in set(strategies) if s not in STRATEGY_ORDER)


def cells(frame: pd.DataFrame, params: list[str], select: str = SELECT_METRIC) -> pd.DataFrame:
    """Long table, one row per cell and metric (``CELL_COLUMNS``): the cell's validation-best
    configuration, its mean validation score, and the mean, SE and 95% t interval of the test metric
    over its replicates; ``complete`` when it ran the data set's whole replicate set."""
    metrics = study_metrics(frame)
    replicate = [k for k in REPLICATE_KEYS if k in frame]
    fixed = (*REPLICATE_KEYS, "dataset", "strategy", "backbone")
    config_cols = [c for c in params if c in frame and c not in fixed]
    rows = []
    for dataset, data in frame.groupby("dataset", sort=True):
        chosen = {}
        for (strategy, backbone), part in data.groupby(["strategy", "backbone"], sort=True):
            key = part["config_id"].astype(str) if "config_id" in part else config_keys(part, config_cols)
            validated = select in part and part[select].notna().any()
            best = part.groupby(key, sort=True)[select].mean().idxmax() if validated else key.iloc[0]
            chosen[(strategy, backbone)] = part[key == best]
        sets = {cell: frozenset(map(tuple, members[replicate].astype(str).to_numpy()))
                for cell, members in chosen.items()}
        full = frozenset().union(*sets.values())
        for (strategy, backbone), members in chosen.items():
            for metric in metrics:
                values = members[metric].dropna().astype(float)
                mean, se, low, high = _interval(values)
                rows.append({
                    "dataset": dataset, "strategy": strategy, "backbone": backbone, "metric": metric,
                    "val_mean": float(members[select].mean()) if select in members else np.nan,
                    "mean": mean, "se": se, "ci_low": low, "ci_high": high, "n_seeds": int(len(values)),
                    "complete": sets[(strategy, backbone)] == full,
                    "replicates": " ".join("/".join(r) for r in sorted(sets[(strategy, backbone)])),
                    "trials": " ".join(members["run_name"].astype(str)) if "run_name" in members else "",
                })
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def cell_table(long: pd.DataFrame, dataset) -> pd.DataFrame:
    """One data set's strategy x (architecture, metric) table of ``mean (SE)`` strings; bold: the
    validation-best strategy per architecture; †: the validation-best cell over all architectures;
    ‡: a cell without the complete replicate set."""
    part = long[long["dataset"] == dataset]
    strategies = strategy_order(part["strategy"].unique())
    backbones = sorted(part["backbone"].unique())
    out = pd.DataFrame({"strategy": strategies})
    usable_all = part[part["complete"] & part["val_mean"].notna()]
    overall = (tuple(usable_all.loc[usable_all["val_mean"].idxmax(), ["strategy", "backbone"]])
               if len(usable_all) and len(backbones) > 1 else None)
    for backbone in backbones:
        for metric in dict.fromkeys(part["metric"]):
            cell = part[(part["backbone"] == backbone) & (part["metric"] == metric)].set_index("strategy")
            usable = cell[cell["complete"] & cell["val_mean"].notna()]
            best = usable["val_mean"].idxmax() if len(usable) > 1 else None
            texts = []
            for strategy in strategies:
                if strategy not in cell.index or pd.isna(cell.loc[strategy, "mean"]):
                    texts.append("–")
                    continue
                mean, se = cell.loc[strategy, "mean"], cell.loc[strategy, "se"]
                text = f"{mean:.4f} ({se:.4f})" if pd.notna(se) else f"{mean:.4f} (–)"
                text = f"**{text}**" if strategy == best else text
                text += " †" if (strategy, backbone) == overall else ""
                texts.append(text if cell.loc[strategy, "complete"] else f"{text} ‡")
            out[f"{backbone} {metric}"] = texts
    return out


def change_vs_ft(long: pd.DataFrame, metric: str) -> pd.DataFrame:
    """dataset, backbone, strategy, mean, ft_mean, change_pct = 100 (mean - FT) / FT, difference and
    its Welch 95% interval over the two cells' replicates; complete cells only."""
    part = long[(long["metric"] == metric) & long["complete"]]
    ft = part[part["strategy"] == REFERENCE].set_index(["dataset", "backbone"])
    rows = []
    for _, row in part[part["strategy"] != REFERENCE].iterrows():
        key = (row["dataset"], row["backbone"])
        reference = ft.loc[key] if key in ft.index else None
        ref_mean = reference["mean"] if reference is not None else np.nan
        low, high = _welch(row, reference)
        rows.append({
            "dataset": row["dataset"], "backbone": row["backbone"], "strategy": row["strategy"],
            "mean": row["mean"], "ft_mean": ref_mean,
            "change_pct": 100.0 * (row["mean"] - ref_mean) / ref_mean if pd.notna(ref_mean) and ref_mean else np.nan,
            "difference": row["mean"] - ref_mean, "diff_ci_low": low, "diff_ci_high": high,
        })
    return pd.DataFrame(rows, columns=["dataset", "backbone", "strategy", "mean", "ft_mean", "change_pct",
                                       "difference", "diff_ci_low", "diff_ci_high"])


def wins_over_ft(change: pd.DataFrame, threshold: float = WIN_THRESHOLD) -> pd.DataFrame:
    """Table 12: per strategy and architecture, the data sets where it beats FT by more than
    ``threshold`` percent with the 95% interval of the difference above 0; Total, cases compared, and
    Effectiveness (%) = wins / cases."""
    known = change[change["change_pct"].notna()]
    backbones = sorted(known["backbone"].unique())
    wins = (known["change_pct"] > threshold) & (known["diff_ci_low"] > 0)
    rows = []
    for strategy in strategy_order(known["strategy"].unique()):
        mine = known["strategy"] == strategy
        row = {"strategy": strategy}
        for backbone in backbones:
            row[backbone] = int((wins & mine & (known["backbone"] == backbone)).sum())
        row["Total"] = int(sum(row[b] for b in backbones))
        row["cases"] = int(mine.sum())
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
    """Table 11: per data set, the strategy and architecture with the best mean *validation* score
    (complete cells only), its test ``metric`` with its 95% interval, and its change relative to FT."""
    part = long[(long["metric"] == metric) & long["complete"] & long["val_mean"].notna()]
    rows = []
    for dataset, group in part.groupby("dataset", sort=True):
        best = group.sort_values(["val_mean", "strategy", "backbone"], ascending=[False, True, True]).iloc[0]
        match = change[(change["dataset"] == dataset) & (change["backbone"] == best["backbone"])
                       & (change["strategy"] == best["strategy"])]["change_pct"]
        change_pct = 0.0 if best["strategy"] == REFERENCE else float(match.iloc[0]) if len(match) else np.nan
        rows.append({"dataset": dataset, "backbone": best["backbone"], "strategy": best["strategy"],
                     "val_mean": best["val_mean"], metric: best["mean"], "ci_low": best["ci_low"],
                     "ci_high": best["ci_high"], "n_seeds": best["n_seeds"], "change_vs_ft_pct": change_pct})
    return pd.DataFrame(rows, columns=["dataset", "backbone", "strategy", "val_mean", metric, "ci_low", "ci_high",
                                       "n_seeds", "change_vs_ft_pct"])


def _interval(values: pd.Series) -> tuple[float, float, float, float]:
    """Mean, SE and 95% t interval over replicates (NaN where one replicate cannot give them)."""
    n = len(values)
    if n == 0:
        return np.nan, np.nan, np.nan, np.nan
    mean = float(values.mean())
    if n < 2:
        return mean, np.nan, np.nan, np.nan
    se = float(values.std(ddof=1) / np.sqrt(n))
    half = float(student_t.ppf(0.975, n - 1)) * se
    return mean, se, mean - half, mean + half


def _welch(row: pd.Series, reference: pd.Series | None) -> tuple[float, float]:
    """Welch's 95% interval of the difference of two cells' means, from their SEs and replicate counts."""
    if reference is None or pd.isna(row["se"]) or pd.isna(reference["se"]):
        return np.nan, np.nan
    va, vb = row["se"] ** 2, reference["se"] ** 2
    if va + vb == 0:
        diff = row["mean"] - reference["mean"]
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (row["n_seeds"] - 1) + vb**2 / (reference["n_seeds"] - 1))
    half = float(student_t.ppf(0.975, df)) * np.sqrt(va + vb)
    diff = row["mean"] - reference["mean"]
    return diff - half, diff + half
