"""Figures of a search (PNG, matplotlib without a display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def metric_by_factor(
    frame: pd.DataFrame, x: str, path: Path, *, metric: str = "test_auc", line: str = "head"
) -> Path:
    """Mean ``metric`` (with a 95% CI over trials) against ``x``, one line per ``line`` level; e.g.
    test AUC by unfreeze depth, one line per head. A continuous ``x`` (learning rate) is shown as
    points on a log axis instead."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    lines = sorted(frame[line].dropna().unique()) if line in frame else [None]
    for level in lines:
        rows = frame if level is None else frame[frame[line] == level]
        if frame[x].nunique() <= 12:
            stats = rows.groupby(x)[metric].agg(["mean", "sem", "count"]).reset_index()
            half = 1.96 * stats["sem"].fillna(0.0)
            ax.errorbar(stats[x], stats["mean"], yerr=half, marker="o", capsize=3, label=str(level))
        else:
            ax.scatter(rows[x], rows[metric], label=str(level), alpha=0.8)
    if frame[x].nunique() > 12 and (frame[x] > 0).all() and frame[x].max() / frame[x].min() > 50:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} (mean, 95% CI)" if frame[x].nunique() <= 12 else metric)
    ax.set_title(f"{metric} by {x}" + (f", per {line}" if line in frame else ""))
    ax.grid(alpha=0.3)
    if line in frame:
        ax.legend(title=line)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def learning_curves(histories: dict[str, pd.DataFrame], path: Path) -> Path:
    """Validation AUC per epoch of the given trials."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, history in histories.items():
        ax.plot(history["step"], history["value"], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_auc")
    ax.set_title("Validation AUC of the best trials")
    ax.set_xticks(np.unique(np.concatenate([h["step"].to_numpy() for h in histories.values()])))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
