"""What represents one level of a compared factor: the trial(s) whose per-case test scores are
compared, chosen on validation only.

- ``mode="best"``: the level's best trial by the validation score (choosing on the test AUC would
  bias the test);
- ``mode="pooled"``: the level's best configuration by mean validation score over its replicates
  (seeds, folds), its replicates' test scores averaged case by case (a seed ensemble; stacking them
  instead would count each test image once per seed and understate the variance). The replicates'
  own scores are kept too (``Model.replicates``), for the bootstrap over seeds and test cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.delong import auc_ci
from analysis.loading import config_keys
from tuner.schema import REPLICATE_KEYS

ScoreReader = Callable[[pd.Series], pd.DataFrame | None]


@dataclass
class Model:
    """What represents one level: the trial(s) whose test scores are compared, the labels and (mean)
    scores of the cases, and each replicate's own scores (``replicates``: (replicates, cases, classes))."""

    level: Any
    trials: list[str]
    labels: np.ndarray  # (n,) class index, or (n, K) 0/1 for multi-label
    scores: np.ndarray  # (n, C)
    index: np.ndarray
    multilabel: bool
    replicates: np.ndarray  # (S, n, C)


def represent(part: pd.DataFrame, factor: str, level: Any, mode: str, select: str, params: list[str],
              read_scores: ScoreReader, notes: list[str], dataset: Any) -> Model | None:
    """The model of ``factor = level`` among ``part`` (one data set's trials), or None (with a note)
    when no trial of the level has test scores."""
    rows = part[(part[factor] == level) & part[select].notna()]
    if rows.empty:
        return None
    rows = rows.sort_values([select, "trial_id"], ascending=[False, True], kind="stable")
    where = f"{dataset}: {factor}={level}"
    if mode == "pooled":
        return _pooled(rows, level, select, params, read_scores, notes, where)
    skipped = []
    for _, row in rows.iterrows():
        scores = read_scores(row)
        if scores is None:
            skipped.append(row["run_name"])
            continue
        if skipped:
            notes.append(f"{where}: the best trial(s) by {select} ({', '.join(skipped)}) have no test scores; "
                         f"the next best, {row['run_name']}, represents the level.")
        labels, values, index, multilabel = arrays(scores)
        return Model(level, [row["run_name"]], labels, values, index, multilabel, values[None])
    notes.append(f"{where}: no trial of this level has test scores ({', '.join(skipped)}).")
    return None


def _pooled(rows, level, select, params, read_scores, notes, where) -> Model | None:
    if "config_id" in rows:
        keyed = rows.assign(_config=rows["config_id"].astype(str))
    else:
        config = [c for c in params if c in rows and c not in (*REPLICATE_KEYS, "dataset")]
        keyed = rows.assign(_config=config_keys(rows, config))
    means = keyed.groupby("_config", sort=False)[select].mean().sort_values(ascending=False, kind="stable")
    for key in means.index:
        members = keyed[keyed["_config"] == key]
        loaded = [(r, read_scores(r)) for _, r in members.iterrows()]
        have = [(r, s) for r, s in loaded if s is not None]
        skipped = [r["run_name"] for r, s in loaded if s is None]
        if skipped:
            notes.append(f"{where}: trial(s) {', '.join(skipped)} have no test scores and are left out of the "
                         "pooled model.")
        if not have:
            continue
        first = have[0][1]
        same = [(r, s) for r, s in have if same_cases(first, s)]
        if len(same) < len(have):
            notes.append(f"{where}: seeds scored different test cases; pooled only those matching the first.")
        if len(same) == 1 and len(members) == 1:
            notes.append(f"{where}: its best configuration ran with one seed only, so the pooled model is that "
                         "single trial.")
        labels, _, index, multilabel = arrays(first)
        stacked = np.stack([arrays(s)[1] for _, s in same])
        return Model(level, [r["run_name"] for r, _ in same], labels, stacked.mean(axis=0), index, multilabel,
                     stacked)
    notes.append(f"{where}: no trial of this level has test scores.")
    return None


def arrays(scores: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(labels, scores (n, C), case index, multilabel) of a test-scores table."""
    score_cols = sorted((c for c in scores.columns if c.startswith("score_")), key=lambda c: int(c[6:]))
    label_cols = sorted((c for c in scores.columns if c.startswith("label_")), key=lambda c: int(c[6:]))
    index = scores["index"].to_numpy() if "index" in scores else np.arange(len(scores))
    values = scores[score_cols].to_numpy(dtype=float)
    if label_cols:
        return scores[label_cols].to_numpy(dtype=int), values, index, True
    return scores["label"].to_numpy(dtype=int), values, index, False


def same_cases(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two test-scores tables hold the same cases with the same labels, in the same order."""
    la, _, ia, _ = arrays(a)
    lb, _, ib, _ = arrays(b)
    return la.shape == lb.shape and np.array_equal(la, lb) and np.array_equal(ia, ib)


def paired(a: Model, b: Model) -> bool:
    """Whether two models scored the same test cases (so the paired tests apply)."""
    return a.labels.shape == b.labels.shape and np.array_equal(a.labels, b.labels) and np.array_equal(a.index, b.index)


def class_problems(labels: np.ndarray, multilabel: bool, n_classes: int) -> list[tuple[str, int, np.ndarray]]:
    """(class name, score column, 0/1 labels) of each one-vs-rest problem; one problem for binary tasks."""
    if multilabel:
        return [(str(k), k, labels[:, k]) for k in range(n_classes)]
    if n_classes == 2:
        return [("1", 1, (labels == 1).astype(int))]
    return [(str(k), k, (labels == k).astype(int)) for k in range(n_classes)]


def per_class(model: Model) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, 0/1 labels, scores) of each one-vs-rest problem of the model's (mean) scores."""
    return [(name, y, model.scores[:, k])
            for name, k, y in class_problems(model.labels, model.multilabel, model.scores.shape[1])]


def roc_points(model: Model) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """(class, fpr, tpr, (auc, ci_low, ci_high)) for each one-vs-rest problem of the model."""
    from sklearn.metrics import roc_curve

    out = []
    for name, y, s in per_class(model):
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s, pos_label=1)
        try:
            ci = auc_ci(y, s)
        except ValueError:
            continue
        out.append((name, fpr, tpr, ci))
    return out
