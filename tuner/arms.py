"""Equal tuning budgets per arm: the cells a study compares, and the share of trials each one gets.

A space declares the factors its study compares (``ARMS``, e.g. ``("head", "unfreeze")``). A sampled
search that let TPE spread its trials freely would give the levels it liked more trials and could
starve one entirely, and "the best trial of each level" would then favour the levels it liked. So
the search enumerates the arm cells (every combination of the factors' levels that the space can
reach, with ``--set`` pins narrowing them), gives each cell the same number of trials, and tunes the
remaining knobs within each cell with its own Optuna study (``tuner.optuna_study.ArmSearcher``):
the fair-comparison protocol of method benchmarks, each arm compared at its own best.

A budget that does not split equally is refused with the nearest budgets that do, rather than
giving some cells one trial more: the point of the split is that no arm is favoured. A grid search
runs every grid point once and is not split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.config import TRIAL_DEFAULTS
from tuner.errors import ConfigError

DEFAULT_SAMPLES = 8  # the budget of a sampled search when --num-samples is not given (rounded up to the cells)


@dataclass(frozen=True)
class ArmPlan:
    """The arm cells of a search and the trials each gets. ``cells`` are the factors' values, in the
    order the space reaches them; with no declared factors there is one cell, the whole space.
    ``share`` is the trials per cell of a sampled search (None for a grid, which is not split)."""

    factors: tuple[str, ...]
    cells: tuple[tuple[Any, ...], ...]
    share: int | None

    @property
    def budget(self) -> int | None:
        """The trials the search runs: the share times the cells (None for a grid)."""
        return None if self.share is None else self.share * len(self.cells)

    def pins(self, cell: tuple[Any, ...]) -> dict[str, Any]:
        """The cell's values as fixed pins, so its study never samples them."""
        return dict(zip(self.factors, cell, strict=True))

    def label(self, cell: tuple[Any, ...]) -> str:
        """A cell in words, ``head=conv, unfreeze=3`` ("" for the one cell of a space without arms); also
        the suffix of its Optuna study's name."""
        return ", ".join(f"{factor}={value}" for factor, value in zip(self.factors, cell, strict=True))

    def label_of(self, config: Mapping[str, Any]) -> str:
        """The label of the cell a trial's config belongs to."""
        return self.label(tuple(config.get(factor) for factor in self.factors))

    def trials_per_arm(self, configs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
        """How many of ``configs`` (the trials that ran) each cell got, every cell listed, for the
        summary and ``medtune_search.json``: the share each arm really got."""
        counts = Counter(self.label_of(config) for config in configs)
        return {self.label(cell): counts.get(self.label(cell), 0) for cell in self.cells}

    def record(self) -> dict[str, Any]:
        """The plan as JSON-ready values (the search's MLflow parent run and ``medtune_search.json``)."""
        return {"factors": list(self.factors), "cells": [self.label(cell) for cell in self.cells],
                "trials_per_cell": self.share}


def arm_plan(factors: Sequence[str], configs: Sequence[Mapping[str, Any]], num_samples: int | None, *,
             grid: bool) -> ArmPlan:
    """The cells of ``factors`` that ``configs`` (every configuration the space can produce, pins
    applied) reach, and each cell's equal share of ``num_samples``. Refuses, before any trial, a
    factor that is no config key, a budget smaller than the cells (naming the minimum) and a budget
    that does not split equally (naming the nearest that do)."""
    for factor in factors:
        if factor not in TRIAL_DEFAULTS:
            raise ConfigError(f"ARMS names {factor!r}, which is no trial config key; a space's ARMS lists keys "
                              "its define() asks for, e.g. ARMS = ('head',).")
    cells = tuple(dict.fromkeys(tuple(config.get(factor) for factor in factors) for config in configs))
    if grid:
        return ArmPlan(tuple(factors), cells, None)
    n = len(cells)
    budget = num_samples if num_samples is not None else -(-max(DEFAULT_SAMPLES, n) // n) * n
    arms = f"the {n} arms of the study ({' x '.join(factors)})"
    if budget < n:
        raise ConfigError(f"--num-samples {budget} is smaller than {arms}: each arm needs at least one trial. Use "
                          f"--num-samples {n} or a multiple of it, or pin fewer levels with --set.")
    if budget % n:
        lower, upper = budget // n * n, (budget // n + 1) * n
        raise ConfigError(f"--num-samples {budget} does not split equally over {arms}; every arm gets the same "
                          f"number of trials. Use --num-samples {lower} or {upper}.")
    return ArmPlan(tuple(factors), cells, budget // n)
