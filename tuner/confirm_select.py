"""Choosing what the confirmation stage re-runs, from a finished search, on validation only.

A search explores: its trials ran at unequal budgets (ASHA, patience) with one seed each, so their scores
only rank candidates. This module reads a search's Tune folder (its ``SEARCH_FILE`` and each trial's
``params.json`` and ``result.json``), groups trials into configurations (``tuner.tracking.trial_config_id``:
a configuration without its seed or fold), scores each by the mean of its trials' ``best_score`` (the
best validation value of the search's metric) and applies one selection rule (``Selection``):

- ``top_k``: the ``k`` configurations with the best validation scores;
- ``per_level``: for each level (or cell of levels) of the factors, its validation-best configuration,
  so every level is confirmed with the same number of runs; a level the space declares but the search
  never ran is refused (the comparison would silently lose an arm);
- ``factorial``: every combination of the factors' levels seen in the search, all other knobs held at
  the search's validation-best configuration.

Test metrics are never read here: a selection that looked at test scores would make the confirmed
test scores optimistic.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from search_spaces import enumerate_space, get_space
from tuner.config import COMPONENTS, make_trial_config, trial_params, unknown_key_error
from tuner.errors import ConfigError
from tuner.schema import REPLICATE_KEYS, SEARCH_FILE
from tuner.search_request import SearchRequest, effective_pins
from tuner.tracking import read_results, trial_config_id

Rule = Literal["top_k", "per_level", "factorial"]


@dataclass(frozen=True)
class Selection:
    """A selection rule and its argument: ``k`` for ``top_k``, ``factors`` for the other two."""

    rule: Rule
    k: int | None = None
    factors: tuple[str, ...] = ()

    def describe(self) -> str:
        """The rule as the command line spells it, for the summary and the logs."""
        value = str(self.k) if self.rule == "top_k" else ",".join(self.factors)
        return f"--{self.rule.replace('_', '-')} {value}"


@dataclass(frozen=True)
class Candidate:
    """One configuration of the search: its canonical config (seed as in its best trial), its identity,
    its validation score (mean ``best_score`` over its trials; None for a factorial cell the search never
    ran) and how many trials ran it."""

    config_id: str
    config: dict[str, Any]
    val_score: float | None
    trials: int
    levels: dict[str, Any] = field(default_factory=dict)  # the factor levels it was chosen for


@dataclass(frozen=True)
class ExploredSearch:
    """A finished search as the confirmation stage reads it: its folder, its ``SEARCH_FILE`` record,
    its configurations best first, and the seeds its trials used."""

    name: str
    directory: Path
    record: dict[str, Any]
    candidates: list[Candidate]
    seeds: frozenset[int]



def saved_request(saved: Mapping[str, Any]) -> SearchRequest:
    """A search's request, rebuilt from the ``request`` of its ``SEARCH_FILE`` (keys this version of
    ``SearchRequest`` lacks are dropped)."""
    known = {f.name for f in fields(SearchRequest)}
    return SearchRequest(**{k: v for k, v in saved.items() if k in known})


def load_search(storage: Path, experiment: str) -> ExploredSearch:
    """The search ``storage/experiment``: every trial that reported a validation score and neither
    errored nor diverged, grouped into configurations, best validation score first."""
    directory = storage / experiment
    search_file = directory / SEARCH_FILE
    if not search_file.is_file():
        raise ConfigError(f"--experiment {experiment!r}: no finished search in {directory} (no {SEARCH_FILE}). "
                          "Check --storage and --experiment (the name `medtune tune` printed).")
    record = json.loads(search_file.read_text())
    scores: dict[str, list[float]] = {}
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    seeds: set[int] = set()
    for trial_dir in sorted(p.parent for p in directory.glob("*/params.json")):
        results = [r for r in read_results(trial_dir) if "best_score" in r]
        if not results or (trial_dir / "error.txt").is_file() or any(r.get("diverged") for r in results):
            continue
        config = make_trial_config(json.loads((trial_dir / "params.json").read_text()))
        score = float(results[-1]["best_score"])  # the trial's best validation value so far: its last report's
        identity = trial_config_id(config)
        scores.setdefault(identity, []).append(score)
        seeds.add(config["seed"])
        if identity not in best or score > best[identity][0]:
            best[identity] = (score, config)
    if not scores:
        raise ConfigError(f"the search {experiment!r} in {directory} has no trial with a validation score to choose "
                          "from (all errored, diverged or never reported). Fix the search first.")
    candidates = [Candidate(identity, best[identity][1], sum(values) / len(values), len(values))
                  for identity, values in scores.items()]
    candidates.sort(key=lambda c: (-c.val_score, c.config_id))
    return ExploredSearch(experiment, directory, record, candidates, frozenset(seeds))


def select(search: ExploredSearch, selection: Selection) -> list[Candidate]:
    """The configurations ``selection`` chooses from ``search``, each once, on validation scores only."""
    if selection.rule == "top_k":
        return _top_k(search, selection.k)
    if not selection.factors:
        raise ConfigError(f"--{selection.rule.replace('_', '-')} needs at least one factor (a config key, e.g. "
                          "head).")
    option = f"--{selection.rule.replace('_', '-')}"
    for factor in selection.factors:
        if factor not in trial_params():
            raise unknown_key_error(factor, list(trial_params()), option)
        if factor in REPLICATE_KEYS:
            raise ConfigError(f"{option} {factor}: {factor} replicates a configuration rather than defines it; the "
                              "stage gives every configuration its own fresh ones (--seeds, --folds). Choose a "
                              "factor such as head, strategy or weights.")
    if selection.rule == "per_level":
        return _per_level(search, selection.factors)
    return _factorial(search, selection.factors)


def _top_k(search: ExploredSearch, k: int | None) -> list[Candidate]:
    if k is None or k < 1:
        raise ConfigError(f"--top-k {k}: choose at least one configuration (an integer >= 1).")
    if k > len(search.candidates):
        raise ConfigError(f"--top-k {k}: the search {search.name!r} ran only {len(search.candidates)} distinct "
                          f"configurations. Use --top-k {len(search.candidates)} or less.")
    return search.candidates[:k]


def _per_level(search: ExploredSearch, factors: Sequence[str]) -> list[Candidate]:
    chosen: dict[tuple[Any, ...], Candidate] = {}
    for candidate in search.candidates:  # best first: the first of each cell is its validation-best
        cell = tuple(candidate.config[f] for f in factors)
        chosen.setdefault(cell, Candidate(candidate.config_id, candidate.config, candidate.val_score,
                                          candidate.trials, dict(zip(factors, cell, strict=True))))
    declared = declared_cells(search, factors)
    names = ",".join(factors)
    undeclared = [cell for cell in chosen if cell not in declared]
    if undeclared:
        raise ConfigError(f"--per-level {names}: the search ran {_cell_text(factors, undeclared[0])}, which is not "
                          "a level of the space's grid (a continuous knob?). Choose categorical factors (e.g. head, "
                          "strategy, weights), or use --top-k.")
    missing = [cell for cell in declared if cell not in chosen]
    if missing:
        raise ConfigError(f"--per-level {names}: the search never ran {_cell_text(factors, missing[0])} "
                          f"({len(missing)} of {len(declared)} levels missing), so that arm has no candidate. Run a "
                          "search that covers every level (more trials, or --search grid), or drop the factor.")
    return sorted(chosen.values(), key=lambda c: tuple(str(v) for v in c.levels.values()))


def declared_cells(search: ExploredSearch, factors: Sequence[str]) -> list[tuple[Any, ...]]:
    """The levels (cells) of ``factors`` the search's space can produce, from its grid under the
    search's own pins: the arms a fair comparison must all have."""
    request = saved_request(search.record["request"])
    pins = effective_pins(request)
    grid = [make_trial_config(config) for config in enumerate_space(get_space(request.space).define, pins)]
    return list(dict.fromkeys(tuple(config[f] for f in factors) for config in grid))


def _factorial(search: ExploredSearch, factors: Sequence[str]) -> list[Candidate]:
    best = search.candidates[0]
    levels = [list(dict.fromkeys(c.config[f] for c in search.candidates)) for f in factors]
    chosen: dict[str, Candidate] = {}
    for values in itertools.product(*levels):
        cell = dict(zip(factors, values, strict=True))
        try:
            config = combine(best.config, cell, search.candidates)
        except ConfigError as error:
            raise ConfigError(f"--factorial {','.join(factors)}: {_cell_text(factors, values)} with the other knobs "
                              f"of the best configuration is not a valid configuration ({error}). Choose factors "
                              "whose levels combine (or use --per-level).") from error
        identity = trial_config_id(config)
        known = next((c for c in search.candidates if c.config_id == identity), None)
        chosen.setdefault(identity, Candidate(identity, config, known.val_score if known else None,
                                              known.trials if known else 0, cell))
    return list(chosen.values())


def combine(base: Mapping[str, Any], levels: Mapping[str, Any], donors: Sequence[Candidate]) -> dict[str, Any]:
    """``base`` with ``levels`` set. A component (head, strategy, loss, optimizer) that a level changes
    brings its own knobs from the validation-best candidate that used it (its defaults if none did), and
    the old one's knobs are dropped; the result is checked by ``make_trial_config``."""
    config = {**base, **levels}
    for registry in COMPONENTS:
        chosen = registry.get(config[registry.kind])
        if chosen.name == base[registry.kind]:
            continue
        donor = next((c.config for c in donors if c.config[registry.kind] == chosen.name), {})
        for name in registry.params():
            if name not in levels:
                config[name] = donor.get(name) if name in chosen.param_names() else None
    return make_trial_config(config)


def _cell_text(factors: Sequence[str], cell: Sequence[Any]) -> str:
    return " × ".join(f"{f}={v!r}" for f, v in zip(factors, cell, strict=True))
