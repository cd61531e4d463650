"""Which stage of a study a classifier trial's run belongs to, and which configuration it replicates:
the tags (``STAGE_TAG``, ``CONFIG_ID_TAG``) that let the MLflow UI and the analysis tell the search's
exploration runs from the confirmation stage's replicates, and group replicates by configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.schema import CONFIG_ID_TAG, CONFIRM, EXPLORE, STAGE_TAG, config_id


def trial_config_id(config: Mapping[str, Any]) -> str:
    """The identity of a trial config as it runs: ``config_id`` of the config with every default filled
    in (``make_trial_config``), so that a searcher's partial config and the full config the confirmation
    stage re-runs get the same identity when they train the same model."""
    # Imported here, not at the top: the trial config pulls in torch and the model registries, which the
    # rest of tuner.tracking (and the analysis that imports it) does not need.
    from tuner.config import make_trial_config

    return config_id(make_trial_config(config))


def explore_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """A search trial's stage and configuration tags."""
    return {STAGE_TAG: EXPLORE, CONFIG_ID_TAG: trial_config_id(config)}


def confirm_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """A confirmation replicate's stage and configuration tags."""
    return {STAGE_TAG: CONFIRM, CONFIG_ID_TAG: trial_config_id(config)}


def no_config_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """No tags from the config: for runs that are not classifier trials (pretraining)."""
    return {}
