"""DeLong comparisons declared by factor, with Holm's correction across the family.

``--compare weights=imagenet,radimagenet`` compares the model that represents each level of ``weights``
(``analysis.compared_models``: the level's best trial, or its best configuration with its replicates'
scores averaged, chosen on validation). The first listed level is the reference B; every other level is
A, so ``difference = AUC_A - AUC_B`` and ``alternative="greater"`` asks whether A beats the reference. A
factor named without levels compares all its levels against the level of the overall best trial.

Models on the same test cases (same data set, same labels in the same order) get the paired test;
otherwise the unpaired one. Multi-class tasks are compared one-vs-rest per class, multi-label tasks
per label; every test of the family, over all comparisons, data sets and classes, enters Holm's
step-down correction. The ROC direction is fixed: a higher score means the positive class.

DeLong holds each model fixed: it counts the test cases as the only source of chance. How much a
fresh seed would move the difference is ``analysis.replicate_bootstrap``'s question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.compared_models import Model, ScoreReader, paired, per_class, represent
from analysis.delong import delong_test, delong_unpaired
from analysis.multiplicity import holm

DEFAULT_FACTORS = ("weights", "head", "strategy", "backbone")
SELECT_METRIC = "best_val_auc"
MODES = ("best", "pooled")


@dataclass(frozen=True)
class ComparisonSpec:
    """One ``--compare``: a factor and, optionally, its levels (the first the reference); kept as
    typed data so a bad spec fails once, when it is parsed, not in the middle of the report."""

    factor: str
    levels: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.factor + (f"={','.join(self.levels)}" if self.levels else "")


@dataclass
class ComparisonResult:
    """The family of DeLong tests (one row per test, Holm-adjusted across all of them), the models
    compared (for the ROC curves, the AUC table and the bootstrap), and what was left out (notes) or
    could not be done because of the input (problems)."""

    table: pd.DataFrame
    models: dict[tuple[str, str, str], list[Model]] = field(default_factory=dict)  # (dataset, factor, spec)
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


def compare(frame: pd.DataFrame, specs: list[ComparisonSpec], read_scores: ScoreReader, *, params: list[str],
            mode: str = "best", alternative: str = "two-sided", alpha: float = 0.05,
            select: str = SELECT_METRIC, test: bool = True) -> ComparisonResult:
    """Every comparison of ``specs`` within each data set; ``read_scores(row)`` gives a trial's
    test-scores frame or None. ``test=False`` only chooses the models (for another test of them)."""
    if mode not in MODES:
        raise ValueError(f"compare mode {mode!r}: use 'best' or 'pooled'")
    result = ComparisonResult(pd.DataFrame())
    rows: list[dict[str, Any]] = []
    if select not in frame:
        result.problems.append(f"no {select!r} column: cannot choose each level's model on validation.")
        return result
    for spec in specs:
        levels = _levels(frame, spec, params, select, result)
        if levels is None:
            continue
        for dataset, part in frame.groupby("dataset", sort=True):
            models = [m for level in levels
                      if (m := represent(part, spec.factor, level, mode, select, params, read_scores,
                                         result.notes, dataset)) is not None]
            if len(models) < 2:
                if len(part[spec.factor].dropna().unique()) > 1:
                    result.notes.append(f"{dataset}: compare {spec.factor}: fewer than two levels have a model "
                                        "with test scores; not compared.")
                continue
            if models[0].level != levels[0]:
                result.notes.append(f"{dataset}: the reference level {levels[0]!r} of {spec.factor} has no model "
                                    f"with test scores; {models[0].level!r} is the reference instead.")
            result.models[(str(dataset), spec.factor, str(spec))] = models
            if test:
                for model in models[1:]:
                    rows += _tests(dataset, spec, model, models[0], alternative, alpha, result.notes)
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


def _levels(frame, spec: ComparisonSpec, params, select, result: ComparisonResult) -> list | None:
    """The levels to compare, the reference first; None (with a problem or note) when there are none."""
    if spec.factor not in frame:
        varying = [c for c in params if c in frame and frame[c].nunique(dropna=True) > 1]
        result.problems.append(f"--compare {spec}: there is no column {spec.factor!r}. Factors that vary here: "
                               f"{', '.join(varying) or 'none'}.")
        return None
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
        result.notes.append(f"--compare {spec}: fewer than two levels of {spec.factor} have trials, nothing to "
                            "compare.")
        return None
    return levels


def _match_level(text: str, present: dict[str, Any]) -> Any:
    if text in present:
        return present[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return next((v for v in present.values()
                 if isinstance(v, int | float | np.number) and not isinstance(v, bool) and float(v) == number), None)


def _tests(dataset, spec, a: Model, b: Model, alternative, alpha, notes) -> list[dict[str, Any]]:
    is_paired = paired(a, b)
    rows = []
    classes_a, classes_b = per_class(a), per_class(b)
    if len(classes_a) != len(classes_b):
        notes.append(f"{dataset}: {spec.factor}: {a.level!r} and {b.level!r} have different numbers of classes; "
                     "not compared.")
        return rows
    for (name, ya, sa), (_, yb, sb) in zip(classes_a, classes_b, strict=True):
        try:
            if is_paired:
                result = delong_test(ya, sa, sb, alternative=alternative, alpha=alpha)
            else:
                result = delong_unpaired(ya, sa, yb, sb, alternative=alternative, alpha=alpha)
        except ValueError as error:
            notes.append(f"{dataset}: {spec.factor} {a.level!r} vs {b.level!r}, class {name}: not tested ({error}).")
            continue
        rows.append({
            "dataset": dataset, "factor": spec.factor, "level": level_text(a.level),
            "reference": level_text(b.level), "class": name, "paired": is_paired,
            "trials_a": " + ".join(a.trials), "trials_b": " + ".join(b.trials),
            **{k: v for k, v in result.as_dict().items() if k != "paired"},
        })
    return rows
