"""What both trial sources (MLflow, the Tune folder) hand to the frame: one dict per trial, the
searches' details, and the typed values, stages and configuration identities they share.

Both sources go through these helpers, so a value, a stage or a configuration identity cannot come out
differently depending on where a trial was read from.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import ConfigError
from tuner.schema import EXPLORE, STAGES, config_id

# What the search logs with every trial's MLflow params beside its config (``trial_params`` of its
# ``SEARCH_FILE``): not part of the configuration a trial's seeds replicate.
SEARCH_LEVEL_PARAMS = ("dataset",)
COUNT_KINDS = ("finished", "errored", "unfinished")


@dataclass
class SearchInfo:
    """One search (experiment) and its confirmation stage, if any: what its parent run or
    ``medtune_search.json`` says about it, and how many trials of each stage finished, errored or
    have not finished (``counts[stage][kind]``)."""

    experiment: str
    space: str | None = None
    dataset: str | None = None
    task: str | None = None
    search: str | None = None
    parent_run_id: str | None = None
    location: str = ""
    confirm_location: str | None = None
    optuna_storage: str | None = None  # the RDB URL of the search's Optuna studies (sampled searches)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, stage: str, kind: str) -> None:
        """Count one trial of ``stage`` as ``kind`` (finished, errored or unfinished)."""
        per_stage = self.counts.setdefault(stage, dict.fromkeys(COUNT_KINDS, 0))
        per_stage[kind] += 1

    def count(self, kind: str, stage: str | None = None) -> int:
        """Trials of ``kind``, in one stage or (None) in all."""
        stages = [stage] if stage else list(self.counts)
        return sum(self.counts.get(s, {}).get(kind, 0) for s in stages)

    @property
    def finished(self) -> int:
        """Finished trials of every stage (the rows of the frame)."""
        return self.count("finished")

    @property
    def errored(self) -> int:
        """Errored trials of every stage (left out of the frame)."""
        return self.count("errored")

    @property
    def unfinished(self) -> int:
        """Running or pending trials of every stage (left out of the frame)."""
        return self.count("unfinished")


@dataclass
class Collected:
    """What a source read: one dict per finished trial, the searches, and the names of the parameter
    and metric columns seen."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    searches: list[SearchInfo] = field(default_factory=list)
    params: set[str] = field(default_factory=set)
    metrics: set[str] = field(default_factory=set)

    def row(self, experiment: str, trial_id: str, config: Mapping[str, Any], values: Mapping[str, float]) -> dict:
        """A trial's row: its config, then its metrics (a metric named like a parameter becomes
        ``final_<name>``, so the ``lr`` column stays the configured learning rate)."""
        row: dict[str, Any] = {"experiment": experiment, "trial_id": trial_id}
        for key, value in config.items():
            row[key] = value
            self.params.add(key)
        for key, value in values.items():
            name = f"final_{key}" if key in config else key
            row[name] = float(value)
            self.metrics.add(name)
        row["epochs_trained"] = int(values.get("epoch", 0) or 0)
        self.rows.append(row)
        return row


def stage_of(value: Any) -> str:
    """A recorded stage, or ``explore`` where none was recorded (searches from before stages existed
    only explored); an unknown stage is an error, since its runs would be analyzed as the wrong kind."""
    if value in (None, ""):
        return EXPLORE
    if value not in STAGES:
        raise ConfigError(f"unknown stage {value!r} recorded for a trial; medtune knows {', '.join(STAGES)}.")
    return str(value)


_IDENTITIES: dict[str, str] = {}


def identity(config: Mapping[str, Any]) -> str:
    """The configuration a trial replicates, as the search tags it (``tuner.tracking.trial_config_id``:
    the config with every default filled in, without seed and fold), for trials read without the tag
    (offline, or runs logged before the tag existed). A config the trial code can no longer complete
    (a component since renamed) falls back to ``tuner.schema.config_id`` of the config as recorded."""
    from tuner.tracking import trial_config_id  # the trial config pulls in torch: only when needed

    own = {k: v for k, v in config.items() if k not in SEARCH_LEVEL_PARAMS}
    key = json.dumps(own, sort_keys=True, default=str)
    if key not in _IDENTITIES:
        try:
            _IDENTITIES[key] = trial_config_id(own)
        except (ConfigError, KeyError, TypeError, ValueError):
            _IDENTITIES[key] = config_id(own)
    return _IDENTITIES[key]


def parsed(value: str) -> Any:
    """An MLflow param (always a string) as the value it was logged from: numbers, booleans, None,
    lists and dicts get their types back; anything else stays text."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def normal(value: Any) -> Any:
    """Lists and dicts as canonical JSON text, so that they group and compare like other values."""
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, sort_keys=True)
    return value


def is_number(value: Any) -> bool:
    """A real number that is not a boolean (JSON results hold both)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
