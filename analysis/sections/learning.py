"""Learning curves and overfitting: how the best trials learned, and the train - validation gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.plots import gap_history, learning_curves

LEVEL_FACTORS = ("weights", "strategy", "head", "backbone")
GAPS = {"gap_acc": ("train_acc", "val_acc"), "gap_loss": ("val_loss", "train_loss")}


def final_gaps(part: pd.DataFrame, reported: list[str]) -> pd.DataFrame:
    """Each trial's final gaps: the reported gap metrics, else computed from train and val values."""
    gaps = pd.DataFrame(index=part.index)
    for name, (minuend, subtrahend) in GAPS.items():
        if name in reported:
            gaps[name] = part[name]
        elif minuend in part and subtrahend in part:
            gaps[name] = part[minuend] - part[subtrahend]
        else:
            gaps[name] = np.nan
    return gaps


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The best trials' curves, the best trial of each level side by side, and the final gaps."""
    loaded, frame, select = ctx.loaded, ctx.study.analyzed, ctx.config.select
    if select is None:
        section.skip("No validation score (`best_score` or `best_val_auc`): cannot tell the best trials.")
        return
    top = frame.sort_values([select, "trial_id"], ascending=[False, True]).head(ctx.options.top)
    histories = {row["run_name"]: loaded.history(row) for _, row in top.iterrows()}
    histories = {k: v for k, v in histories.items() if not v.empty}
    if histories:
        path = learning_curves(histories, report.folder / "learning_curves.png",
                               f"The {len(histories)} best trials by {select}")
        report.image(section, path, "How did the best trials learn: loss, accuracy, and train - val gap per epoch?")
    factor = next((f for f in LEVEL_FACTORS if f in frame and frame[f].nunique() > 1), None)
    if factor is None:
        section.note("No factor among weights, strategy, head, backbone varies: no per-level curves.")
        return
    by_level, gap_rows = {}, []
    reported = [g for g in GAPS if g in frame and frame[g].notna().any()]
    for level, part in frame.groupby(factor, sort=True):
        if part[select].isna().all():
            continue
        best = part.loc[part[select].idxmax()]
        history = loaded.history(best)
        if not history.empty:
            by_level[f"{factor}={level} ({best['run_name']})"] = history
        final = gap_history(history).iloc[-1] if not history.empty else pd.Series(dtype=float)
        gaps_all = final_gaps(part, reported)
        gap_rows.append({
            factor: level, "best trial": best["run_name"], "epochs": int(best["epochs_trained"]),
            "final gap_acc": final.get("gap_acc", np.nan), "final gap_loss": final.get("gap_loss", np.nan),
            "mean gap_acc (all trials)": gaps_all["gap_acc"].mean(),
            "mean gap_loss (all trials)": gaps_all["gap_loss"].mean(), "trials": len(part),
        })
    if by_level:
        path = learning_curves(by_level, report.folder / f"learning_curves_by_{factor}.png",
                               f"Best trial per {factor} level")
        report.image(section, path, f"Does one {factor} overfit more than another (best trial of each, side by side)?")
    if gap_rows:
        source = ("reported by the trials (" + ", ".join(reported) + ")" if reported
                  else "computed from the final train and validation values")
        section.text(f"gap_acc = train_acc - val_acc and gap_loss = val_loss - train_loss at the last epoch "
                     f"trained, {source}. Positive gaps mean the model fits training data better than it "
                     "generalises.")
        report.table(section, pd.DataFrame(gap_rows), f"overfitting_gaps_by_{factor}",
                     f"How large is the final train - validation gap for each {factor}?")


UNIT = SectionUnit("Learning curves and overfitting", lambda ctx: "How did the best trials learn, and how far "
                   "apart are their training and validation curves?", "conclusion", build)
