"""Trials of finished searches, from MLflow, as one pandas row per trial.

Columns: the canonical params (typed back from MLflow's strings), the final metrics (the last value
each trial reported; ``test_*`` are its best-validation model's), ``log10_lr``, and bookkeeping:
``run_id``, ``run_name``, ``experiment``, ``parent_run_id``, ``outcome`` (completed / stopped_early),
``epochs_trained`` and ``test_scores`` (artifact URI of the per-sample test scores, or None).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from tuner.errors import ConfigError
from tuner.tracking import OUTCOME_TAG, TEST_SCORES_TAG, TRIAL_ID_TAG, default_tracking_uri

_PARENT_TAG = "mlflow.parentRunId"


def resolve_tracking_uri(tracking_uri: str | None, storage: str | os.PathLike = "results") -> str:
    return (
        tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(Path(storage).expanduser().resolve())
    )


def load_trials(
    experiment: str | list[str], tracking_uri: str | None = None, storage: str | os.PathLike = "results"
) -> pd.DataFrame:
    """One row per finished trial (completed, or stopped early by ASHA) of the named experiment(s)."""
    uri = resolve_tracking_uri(tracking_uri, storage)
    client = MlflowClient(uri)
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    rows = []
    for name in names:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise ConfigError(
                f"no MLflow experiment named {name!r} in {uri}. Check --experiment and "
                "--tracking-uri / --storage."
            )
        for run in _all_runs(client, found.experiment_id):
            tags = run.data.tags
            if TRIAL_ID_TAG not in tags or run.info.status != "FINISHED":
                continue
            row = {key: _typed(value) for key, value in run.data.params.items()}
            row.update(run.data.metrics)
            row.update(
                {
                    "run_id": run.info.run_id,
                    "run_name": run.info.run_name,
                    "experiment": name,
                    "parent_run_id": tags.get(_PARENT_TAG),
                    "outcome": tags.get(OUTCOME_TAG),
                    "epochs_trained": int(run.data.metrics.get("epoch", row.get("best_epoch", 0)) or 0),
                    "test_scores": (
                        f"{run.info.artifact_uri}/{tags[TEST_SCORES_TAG]}"
                        if TEST_SCORES_TAG in tags
                        else None
                    ),
                }
            )
            rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty and "lr" in frame:
        frame["log10_lr"] = np.log10(frame["lr"].astype(float))
    return frame


def load_test_scores(uri: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """A trial's per-sample test scores: columns index, label, score_0 .. score_{C-1}."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
    return pd.read_csv(local)


def _all_runs(client: MlflowClient, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _typed(value: str):
    """MLflow stores params as strings; give numbers, booleans and None back their types."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
