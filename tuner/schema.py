"""The names the search writes and the analysis reads: MLflow tags, file names, trial outcomes, study
stages and the identity of a configuration. Both sides import this module (it imports nothing heavy),
so a name cannot drift between writer and reader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Files
SEARCH_FILE = "medtune_search.json"  # in a search's Tune folder: what --resume, sync and offline analysis read
TEST_SCORES_FILE = "test_scores.csv"  # per-sample test scores of a trial's best epoch (DeLong's input)
# per-sample validation scores of the same epoch, beside the test scores (what chooses an ensemble's k)
VAL_SCORES_FILE = "val_scores.csv"

# MLflow tags
PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "medtune.role"  # search | pretrain | pretrain-search: what a top-level run is
TRIAL_ID_TAG = "medtune.trial_id"
OUTCOME_TAG = "medtune.outcome"
TEST_SCORES_TAG = "medtune.test_scores"  # artifact path of the per-sample test scores, once logged
STAGE_TAG = "medtune.stage"  # explore | confirm: which stage of a study a trial's run belongs to
CONFIG_ID_TAG = "medtune.config_id"  # config_id(config): the configuration its seeds (and folds) replicate

# How a trial ended
COMPLETED = "completed"  # every epoch ran
STOPPED_EARLY = "stopped_early"  # stopped by the scheduler (ASHA)
EARLY_STOPPING = "early_stopping"  # its own patience ended it
DIVERGED = "diverged"  # its loss became non-finite
ERRORED = "errored"
OUTCOMES = (COMPLETED, STOPPED_EARLY, EARLY_STOPPING, DIVERGED, ERRORED)

# Stages: the search explores (chooses candidates); the confirmation stage re-runs chosen configurations
# at full budget with fresh seeds, and only its runs support conclusions.
EXPLORE = "explore"
CONFIRM = "confirm"
STAGES = (EXPLORE, CONFIRM)

# Keys that replicate a configuration rather than define it.
REPLICATE_KEYS = ("seed", "fold")


def trial_outcome(config: Mapping[str, Any], last_result: Mapping[str, Any]) -> str:
    """How a trial that ended without an error ended: all its epochs, its loss diverging, its own
    early stopping (patience), or stopped by the scheduler (ASHA)."""
    if last_result.get("diverged"):
        return DIVERGED
    if last_result.get("stopped_by_patience"):
        return EARLY_STOPPING
    return COMPLETED if last_result.get("epoch", 0) >= config.get("epochs", 0) else STOPPED_EARLY


def config_id(config: Mapping[str, Any]) -> str:
    """A short, stable identity of a configuration without its replicate keys (seed, fold): the unit the
    replicates of the confirmation stage repeat, and the random effect of the mixed model."""
    defining = {k: v for k, v in sorted(config.items()) if k not in REPLICATE_KEYS}
    return hashlib.sha1(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:10]


def confirm_experiment(experiment: str) -> str:
    """The name of a search's confirmation stage (its Tune folder beside the search's, in the same
    storage): ``<experiment>-confirm``. One spelling, so the stage that writes it and the analysis that
    reads it cannot disagree."""
    return f"{experiment}-{CONFIRM}"
