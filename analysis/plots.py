"""Figures of a search (PNG, matplotlib without a display)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy.stats import t as student_t  # noqa: E402

DPI = 90


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:  # measures every label: slow on figures of many axes, which set their own spacing
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and the half-width of its t interval (NaN for a single value), and n."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(values.iloc[0]), math.nan, 1
    half = float(student_t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return float(values.mean()), half, n


def metric_by_factor(
    frame: pd.DataFrame, x: str, path: Path, *, metric: str = "test_auc", line: str = "head"
) -> Path:
    """Mean ``metric`` with a 95% t interval over trials against ``x``, one line per ``line`` level;
    e.g. test AUC by unfreeze depth, one line per head. A continuous ``x`` with many values (a
    learning rate) is shown as points, on a log axis when it spans decades."""
    frame = frame[frame[x].notna() & frame[metric].notna()]
    numeric = (
        pd.to_numeric(frame[x], errors="coerce").notna().all()
        and frame[x].map(lambda v: not isinstance(v, bool | np.bool_)).all()
    )
    categories: list = []
    if not numeric:  # e.g. strategy: levels at 0, 1, 2, ... in the study's order
        from analysis.strategy_tables import strategy_order

        levels = frame[x].unique()
        categories = strategy_order(levels) if x == "strategy" else sorted(levels, key=str)
        frame = frame.assign(**{x: frame[x].map({c: i for i, c in enumerate(categories)})})
    discrete = frame[x].nunique() <= 12 or not numeric
    bounded = bool(frame[metric].between(0, 1).all())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    has_line = line in frame and line != x and frame[line].nunique() > 0
    levels = sorted(frame[line].dropna().unique(), key=str) if has_line else [None]
    for i, level in enumerate(levels):
        rows = frame if level is None else frame[frame[line] == level]
        label = str(level) if level is not None else metric
        if discrete:
            stats = [(xv, *mean_ci(group[metric])) for xv, group in rows.groupby(x, sort=True)]
            xs = np.array([s[0] for s in stats], dtype=float)
            # a small offset per line keeps overlapping error bars readable
            offset = (i - (len(levels) - 1) / 2) * 0.04 * (np.ptp(xs) if len(xs) > 1 and np.ptp(xs) else 1)
            means = np.array([s[1] for s in stats])
            half = np.array([0.0 if math.isnan(s[2]) else s[2] for s in stats])
            low, high = means - half, means + half
            if bounded:  # a proportion's interval stays within [0, 1]
                low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
            ax.errorbar(
                xs + offset,
                means,
                yerr=[means - low, high - means],
                marker="o",
                linestyle="-" if numeric else "none",
                capsize=3,
                label=label,
            )
        else:
            ax.scatter(rows[x], rows[metric], label=label, alpha=0.8)
    values = pd.to_numeric(frame[x], errors="coerce")
    if not discrete and (values > 0).all() and values.max() / values.min() > 50:
        ax.set_xscale("log")
    if categories:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30, ha="right")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} (mean, 95% CI)" if discrete else metric)
    ax.set_title(f"{metric} by {x}" + (f", per {line}" if has_line else ""))
    ax.grid(alpha=0.3)
    if has_line:
        ax.legend(title=line, fontsize=8)
    return _save(fig, path)


def change_heatmap(change: pd.DataFrame, path: Path, metric: str) -> Path:
    """Percentage change of ``metric`` relative to FT: strategy x architecture, one panel per data
    set (the strategies paper's Figures 6-11)."""
    datasets = sorted(change["dataset"].unique(), key=str)
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(1.6 + 2.2 * max(len(datasets), 1) * 1.3, 4.2), squeeze=False
    )
    limit = float(np.nanmax(np.abs(change["change_pct"]))) if change["change_pct"].notna().any() else 1.0
    limit = max(limit, 0.1)
    image = None
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = change[change["dataset"] == dataset]
        grid = part.pivot_table(
            index="strategy", columns="backbone", values="change_pct", aggfunc="first", dropna=False
        )
        from analysis.strategy_tables import strategy_order

        grid = grid.reindex(strategy_order(grid.index))
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=30, ha="right")
        ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
        for (r, c), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            dark = not np.isnan(value) and abs(value) > 0.6 * limit
            text = "–" if np.isnan(value) else f"{value:+.1f}%"
            ax.text(c, r, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_title(str(dataset))
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label=f"% change in {metric} vs FT")
    fig.suptitle(f"Change in {metric} relative to full fine-tuning (FT)")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def roc_curves(panels: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray, tuple]]]], path: Path) -> Path:
    """One panel per comparison: each model's ROC curve, its AUC and 95% DeLong CI in the legend.
    ``panels`` = [(title, [(label, fpr, tpr, (auc, low, high)), ...]), ...]."""
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 4.1 * rows), squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels, strict=False):
        for label, fpr, tpr, (auc, low, high) in curves:
            ax.plot(fpr, tpr, label=f"{label}: AUC {auc:.3f} [{low:.3f}, {high:.3f}]")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_aspect("equal")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)


def _curve_panels(axes, history: pd.DataFrame) -> None:
    """Loss, accuracy and overfitting gap of one trial on three axes."""
    loss_ax, acc_ax, gap_ax = axes
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        if key in history and history[key].notna().any():
            loss_ax.plot(history.index, history[key], style, marker=".", label=key)
    for key, style in (("train_acc", "-"), ("val_acc", "--")):
        if key in history and history[key].notna().any():
            acc_ax.plot(history.index, history[key], style, marker=".", label=key)
    gaps = gap_history(history)
    if "gap_acc" in gaps:
        gap_ax.plot(gaps.index, gaps["gap_acc"], "-", marker=".", color="C0", label="gap_acc")
    gap_ax.axhline(0.0, color="grey", linewidth=0.8)
    handles, labels = gap_ax.get_legend_handles_labels()
    if "gap_loss" in gaps:  # loss gaps live on another scale than accuracy gaps: a second axis
        twin = gap_ax.twinx()
        twin.plot(gaps.index, gaps["gap_loss"], "--", marker=".", color="C1", label="gap_loss")
        twin.set_ylabel("gap_loss = val - train loss", fontsize=8)
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy"), (gap_ax, "gap_acc = train - val acc")):
        ax.set_ylabel(name, fontsize=8 if ax is gap_ax else None)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax is not gap_ax and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if handles:
        gap_ax.legend(handles, labels, fontsize=7)


def gap_history(history: pd.DataFrame) -> pd.DataFrame:
    """``gap_acc`` = train_acc - val_acc and ``gap_loss`` = val_loss - train_loss per epoch: the
    reported ones when the trial logged them, else computed from the curves."""
    gaps = {}
    if "gap_acc" in history and history["gap_acc"].notna().any():
        gaps["gap_acc"] = history["gap_acc"]
    elif {"train_acc", "val_acc"} <= set(history.columns):
        gaps["gap_acc"] = history["train_acc"] - history["val_acc"]
    if "gap_loss" in history and history["gap_loss"].notna().any():
        gaps["gap_loss"] = history["gap_loss"]
    elif {"train_loss", "val_loss"} <= set(history.columns):
        gaps["gap_loss"] = history["val_loss"] - history["train_loss"]
    return pd.DataFrame(gaps)


def learning_curves(histories: dict[str, pd.DataFrame], path: Path, title: str) -> Path:
    """One column per trial (or level): rows loss, accuracy, overfitting gap."""
    n = len(histories)
    width = 3.4 * n + 0.6
    fig, axes = plt.subplots(3, n, figsize=(width, 7.6), squeeze=False)
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.75 / width, bottom=0.07, top=0.9, wspace=0.65, hspace=0.4
    )
    for col, (name, history) in enumerate(histories.items()):
        _curve_panels(axes[:, col], history)
        axes[0, col].set_title(name, fontsize=8)
    lows = [ax.get_ylim()[0] for ax in axes[1]]  # accuracy: one scale, so the columns compare at a glance
    highs = [ax.get_ylim()[1] for ax in axes[1]]
    for ax in axes[1]:
        ax.set_ylim(min(lows), max(highs))
    fig.suptitle(title)
    return _save(fig, path, tight=False)


def importance_bars(table: pd.DataFrame, path: Path, metric: str) -> Path:
    """One horizontal bar per hyperparameter and evaluator (the columns of ``table`` besides
    ``param``), side by side, so that where fANOVA and mean-decrease-in-impurity disagree shows."""
    params = list(table["param"])[::-1]
    evaluators = [c for c in table.columns if c != "param"]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(params) + 1.6))
    height = 0.8 / max(len(evaluators), 1)
    for i, evaluator in enumerate(evaluators):
        values = table.set_index("param").loc[params, evaluator].to_numpy(dtype=float)
        ax.barh(np.arange(len(params)) + i * height, values, height=height, label=evaluator)
    ax.set_yticks(np.arange(len(params)) + height * (len(evaluators) - 1) / 2, params)
    ax.set_xlabel(f"importance for {metric} (normalised)")
    ax.set_title("Hyperparameter importance")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    return _save(fig, path)


def tuning_curves(curves: pd.DataFrame, path: Path, metric: str, select: str) -> Path:
    """Expected best validation score (solid) and the test score of the validation-best trial (dashed)
    against the number of trials, one panel per data set, a band of one standard deviation around the
    whole search's curves (``analysis.tuning_curves``)."""
    datasets = sorted(curves["dataset"].unique(), key=str)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.0), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = curves[curves["dataset"] == dataset]
        for i, (group, rows) in enumerate(part.groupby("group", sort=False)):
            color, whole = f"C{i}", group == "all trials"
            ax.plot(rows["n"], rows["expected_val"], "-", color=color, label=f"{group}: {select}",
                    linewidth=2 if whole else 1)
            ax.plot(rows["n"], rows["expected_test"], "--", color=color, label=f"{group}: {metric}",
                    linewidth=2 if whole else 1)
            if whole:
                for column, sd in (("expected_val", "val_sd"), ("expected_test", "test_sd")):
                    ax.fill_between(rows["n"], rows[column] - rows[sd], rows[column] + rows[sd], color=color,
                                    alpha=0.12)
        ax.set_xlabel("trials in the search (n)")
        ax.set_ylabel("expected score of the validation-best trial")
        ax.set_title(str(dataset))
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    return _save(fig, path)
