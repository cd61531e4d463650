"""DeLong comparisons declared by factor, with Holm's correction across the family.

``--compare weights=imagenet,radimagenet`` compares the model that represents each level of
``weights``: the level's best trial by validation AUC (``mode="best"``; choosing on the test AUC
would bias the test), or (``mode="pooled"``) the level's best configuration by mean validation AUC
over its seeds, its seeds' test scores averaged case by case (a seed ensemble; stacking the seeds'
predictions instead would count each test image once per seed and understate the variance). The
first listed level is the reference B; every other level is A, so ``difference = AUC_A - AUC_B``
and ``alternative="greater"`` asks whether A beats the reference. A factor named without levels
compares all its levels against the level of the overall best trial.

Models on the same test cases (same data set, same labels in the same order) get the paired test;
otherwise the unpaired one. Multi-class tasks are compared one-vs-rest per class, multi-label tasks
per label; every test of the family, over all comparisons, data sets and classes, enters Holm's
step-down correction. The ROC direction is fixed: a higher score means the positive class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.delong import auc_ci, delong_test, delong_unpaired
from analysis.loading import config_keys

DEFAULT_FACTORS = ("weights", "head", "strategy", "backbone")
SELECT_METRIC = "best_val_auc"


@dataclass(frozen=True)
class ComparisonSpec:
    """One ``--compare``: a factor and, optionally, its levels (the first the reference); kept as
    typed data so a bad spec fails once, when it is parsed, not in the middle of the report."""

    factor: str
    levels: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.factor + (f"={','.join(self.levels)}" if self.levels else "")


@dataclass
class Model:
    """What represents one level: the trial(s) whose test scores are compared."""

    level: Any
    trials: list[str]
    labels: np.ndarray  # (n,) class index, or (n, K) 0/1 for multi-label
    scores: np.ndarray  # (n, C)
    index: np.ndarray
    multilabel: bool


@dataclass
class ComparisonResult:
    """The family of DeLong tests (one row per test, Holm-adjusted across all of them), the models
    compared (for the ROC curves and AUC table), and what was left out (notes) or could not be done
    because of the input (problems)."""

    table: pd.DataFrame
    models: dict[tuple[str, str, str], list[Model]] = field(
        default_factory=dict
    )  # (dataset, factor) -> models
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_compare(spec: str) -> ComparisonSpec:
    """``"weights=imagenet,radimagenet"`` or ``"head"``."""
    factor, sep, levels = str(spec).partition("=")
    factor = factor.strip()
    if not factor:
        raise ValueError(f"--compare {spec!r}: name a factor, e.g. --compare weights=imagenet,radimagenet")
    parsed = tuple(level.strip() for level in levels.split(",") if level.strip()) if sep else ()
    if sep and len(parsed) < 2:
        raise ValueError(f"--compare {spec!r}: list at least two levels, e.g. {factor}=a,b")
    return ComparisonSpec(factor, parsed)


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (as ``multipletests(method="holm")``); NaNs stay NaN and
    do not count towards the family size."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def compare(
    frame: pd.DataFrame,
    specs: list[ComparisonSpec],
    read_scores,
    *,
    params: list[str],
    mode: str = "best",
    alternative: str = "two-sided",
    alpha: float = 0.05,
    select: str = SELECT_METRIC,
) -> ComparisonResult:
    """Run every comparison of ``specs`` within each data set; ``read_scores(row)`` gives a trial's
    test-scores frame or None."""
    if mode not in ("best", "pooled"):
        raise ValueError(f"compare mode {mode!r}: use 'best' or 'pooled'")
    result = ComparisonResult(pd.DataFrame())
    rows: list[dict[str, Any]] = []
    if select not in frame:
        result.problems.append(f"no {select!r} column: cannot choose each level's model on validation.")
        return result
    for spec in specs:
        if spec.factor not in frame:
            varying = [c for c in params if c in frame and frame[c].nunique(dropna=True) > 1]
            result.problems.append(
                f"--compare {spec}: there is no column {spec.factor!r}. Factors that vary here: "
                f"{', '.join(varying) or 'none'}."
            )
            continue
        present = {level_text(v): v for v in frame[spec.factor].dropna().unique()}
        if spec.levels:
            matched = {level: _match_level(level, present) for level in spec.levels}
            for level, value in matched.items():
                if value is None:
                    result.problems.append(
                        f"--compare {spec}: level {level!r} of {spec.factor} has no finished trial (levels "
                        f"with trials: {', '.join(sorted(present)) or 'none'})."
                    )
            levels = [value for value in matched.values() if value is not None]
        else:
            best = frame.loc[frame[select].idxmax()] if frame[select].notna().any() else None
            levels = sorted(present.values(), key=str)
            if best is not None and pd.notna(best[spec.factor]):
                levels.remove(best[spec.factor])
                levels.insert(0, best[spec.factor])
        if len(levels) < 2:
            result.notes.append(
                f"--compare {spec}: fewer than two levels of {spec.factor} have trials, nothing to compare."
            )
            continue
        for dataset, part in frame.groupby("dataset", sort=True):
            models = []
            for level in levels:
                model = _represent(
                    part, spec.factor, level, mode, select, params, read_scores, result.notes, dataset
                )
                if model is not None:
                    models.append(model)
            if len(models) < 2:
                if len(part[spec.factor].dropna().unique()) > 1:
                    result.notes.append(
                        f"{dataset}: compare {spec.factor}: fewer than two levels have a model with test "
                        "scores; not compared."
                    )
                continue
            if models[0].level != levels[0]:
                result.notes.append(
                    f"{dataset}: the reference level {levels[0]!r} of {spec.factor} has no model with test "
                    f"scores; {models[0].level!r} is the reference instead."
                )
            result.models[(str(dataset), spec.factor, str(spec))] = models
            reference = models[0]
            for model in models[1:]:
                rows += _tests(dataset, spec, model, reference, alternative, alpha, result.notes)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p_value"])
        table["significant"] = table["p_holm"] < alpha
    result.table = table
    return result


def level_text(value: Any) -> str:
    """A level as a user types it: 3 for 3.0 (an int column with missing values is float)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _match_level(text: str, present: dict[str, Any]) -> Any:
    if text in present:
        return present[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return next(
        (
            v
            for v in present.values()
            if isinstance(v, int | float | np.number) and not isinstance(v, bool) and float(v) == number
        ),
        None,
    )


def _represent(part, factor, level, mode, select, params, read_scores, notes, dataset) -> Model | None:
    rows = part[(part[factor] == level) & part[select].notna()]
    if rows.empty:
        return None
    rows = rows.sort_values([select, "trial_id"], ascending=[False, True], kind="stable")
    if mode == "pooled":
        config = [c for c in params if c in rows and c not in ("seed", "dataset")]
        keyed = rows.assign(_config=config_keys(rows, config))
        means = (
            keyed.groupby("_config", sort=False)[select].mean().sort_values(ascending=False, kind="stable")
        )
        for key in means.index:
            members = keyed[keyed["_config"] == key]
            loaded = [(r, read_scores(r)) for _, r in members.iterrows()]
            have = [(r, s) for r, s in loaded if s is not None]
            skipped = [r["run_name"] for r, s in loaded if s is None]
            if skipped:
                notes.append(
                    f"{dataset}: {factor}={level}: trial(s) {', '.join(skipped)} have no test scores and are "
                    "left out of the pooled model."
                )
            if not have:
                continue
            first = have[0][1]
            same = [(r, s) for r, s in have if _same_cases(first, s)]
            if len(same) < len(have):
                notes.append(
                    f"{dataset}: {factor}={level}: seeds scored different test cases; pooled only "
                    "those matching the first."
                )
            if len(same) == 1 and len(members) == 1:
                notes.append(
                    f"{dataset}: {factor}={level}: its best configuration ran with one seed only, so the "
                    "pooled model is that single trial."
                )
            labels, scores, index, multilabel = _arrays(first)
            stacked = np.mean([_arrays(s)[1] for _, s in same], axis=0)
            return Model(
                level, [r["run_name"] for r, _ in same], labels, stacked, index, multilabel
            )
        notes.append(f"{dataset}: {factor}={level}: no trial of this level has test scores.")
        return None
    skipped = []
    for _, row in rows.iterrows():
        scores = read_scores(row)
        if scores is None:
            skipped.append(row["run_name"])
            continue
        if skipped:
            notes.append(
                f"{dataset}: {factor}={level}: the best trial(s) by {select} ({', '.join(skipped)}) have "
                f"no test scores; the next best, {row['run_name']}, represents the level."
            )
        labels, values, index, multilabel = _arrays(scores)
        return Model(level, [row["run_name"]], labels, values, index, multilabel)
    notes.append(
        f"{dataset}: {factor}={level}: no trial of this level has test scores ({', '.join(skipped)})."
    )
    return None


def _arrays(scores: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    score_cols = sorted((c for c in scores.columns if c.startswith("score_")), key=lambda c: int(c[6:]))
    label_cols = sorted((c for c in scores.columns if c.startswith("label_")), key=lambda c: int(c[6:]))
    index = scores["index"].to_numpy() if "index" in scores else np.arange(len(scores))
    values = scores[score_cols].to_numpy(dtype=float)
    if label_cols:
        return scores[label_cols].to_numpy(dtype=int), values, index, True
    return scores["label"].to_numpy(dtype=int), values, index, False


def _same_cases(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    la, _, ia, _ = _arrays(a)
    lb, _, ib, _ = _arrays(b)
    return la.shape == lb.shape and np.array_equal(la, lb) and np.array_equal(ia, ib)


def per_class(model: Model) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, 0/1 labels, scores) of each one-vs-rest problem; one problem for binary tasks."""
    if model.multilabel:
        return [(str(k), model.labels[:, k], model.scores[:, k]) for k in range(model.scores.shape[1])]
    if model.scores.shape[1] == 2:
        return [("1", (model.labels == 1).astype(int), model.scores[:, 1])]
    return [
        (str(k), (model.labels == k).astype(int), model.scores[:, k]) for k in range(model.scores.shape[1])
    ]


def _tests(dataset, spec, a: Model, b: Model, alternative, alpha, notes) -> list[dict[str, Any]]:
    paired = (
        a.labels.shape == b.labels.shape
        and np.array_equal(a.labels, b.labels)
        and np.array_equal(a.index, b.index)
    )
    rows = []
    classes_a, classes_b = per_class(a), per_class(b)
    if len(classes_a) != len(classes_b):
        notes.append(
            f"{dataset}: {spec.factor}: {a.level!r} and {b.level!r} have different numbers of classes; "
            "not compared."
        )
        return rows
    for (name, ya, sa), (_, yb, sb) in zip(classes_a, classes_b, strict=True):
        try:
            if paired:
                result = delong_test(ya, sa, sb, alternative=alternative, alpha=alpha)
            else:
                result = delong_unpaired(ya, sa, yb, sb, alternative=alternative, alpha=alpha)
        except ValueError as error:
            notes.append(
                f"{dataset}: {spec.factor} {a.level!r} vs {b.level!r}, class {name}: not tested ({error})."
            )
            continue
        rows.append(
            {
                "dataset": dataset,
                "factor": spec.factor,
                "level": level_text(a.level),
                "reference": level_text(b.level),
                "class": name,
                "paired": paired,
                "trials_a": " + ".join(a.trials),
                "trials_b": " + ".join(b.trials),
                **{k: v for k, v in result.as_dict().items() if k != "paired"},
            }
        )
    return rows


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
