"""MLflow logging of a search: one parent run per search, one nested child run per trial.

Logging happens on the driver, in a Tune callback, from the metrics trials report to Tune. Trials on
worker nodes therefore need no route to the tracking server, and everything logged can be rebuilt
from Tune's own results.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray import tune

from tuner import __version__
from tuner.errors import ConfigError
from tuner.training.checkpoint import TEST_SCORES_FILE

TRIAL_ID_TAG = "medtune.trial_id"
OUTCOME_TAG = "medtune.outcome"  # completed | stopped_early (ASHA) | early_stopping (patience) | errored
TEST_SCORES_TAG = "medtune.test_scores"  # artifact path of the per-sample test scores, once logged
# What a trial reports that MLflow keeps (Tune adds its own bookkeeping, e.g. time_this_iter_s).
_METRIC_PREFIXES = ("train_", "val_", "test_", "gap_", "best_")
_METRIC_KEYS = ("epoch", "lr", "n_params", "n_trainable_params", "stopped_by_patience")


def default_tracking_uri(storage: Path) -> str:
    return f"sqlite:///{storage / 'mlflow.db'}"


def open_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> tuple[MlflowClient, str]:
    """The MLflow experiment ``name`` (created if new); fails early if the store cannot be reached."""
    client = MlflowClient(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return client, experiment.experiment_id
        location = artifact_root.as_uri() if artifact_root is not None else None
        return client, client.create_experiment(name, artifact_location=location)
    except Exception as error:  # mlflow raises many types for an unreachable store
        raise ConfigError(f"cannot reach the MLflow tracking store {tracking_uri!r} ({type(error).__name__}: "
                          f"{str(error)[:300]}). Start the server or fix --tracking-uri / "
                          "$MLFLOW_TRACKING_URI.") from error


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # e.g. a `ray job submit` working dir, which carries no .git


def start_parent_run(client: MlflowClient, experiment_id: str, name: str, params: Mapping[str, Any],
                     space_source: Path) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={
        "medtune.version": __version__, "medtune.git_commit": git_commit(), "medtune.role": "search"})
    client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in params.items()])
    client.log_artifact(run.info.run_id, str(space_source), artifact_path="search_space")
    return run.info.run_id


def trial_run_name(config: Mapping[str, Any]) -> str:
    """Readable and sortable, e.g. ``resnet50-convskip-u3-lr1e-03-s0``."""
    depth = {"topk": f"u{config.get('unfreeze')}"}.get(config.get("strategy"), config.get("strategy"))
    return f"{config.get('backbone')}-{config.get('head')}-{depth}-lr{config.get('lr', 0):.0e}-s{config.get('seed')}"


def trial_outcome(config: Mapping[str, Any], last_result: Mapping[str, Any]) -> str:
    """How a trial that ended without an error ended: all its epochs, its own early stopping
    (patience), or stopped by the scheduler (ASHA)."""
    if last_result.get("stopped_by_patience"):
        return "early_stopping"
    return "completed" if last_result.get("epoch", 0) >= config.get("epochs", 0) else "stopped_early"


def _param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


class MlflowTrialLogger(tune.Callback):
    """Creates each trial's child run, logs its per-epoch metrics (step = epoch), and at its end the
    test scores of its best-validation model. On resume it finds the runs it made before by the
    trial-id tag instead of making new ones."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 extra_params: Mapping[str, Any]) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.extra_params = dict(extra_params)
        self._runs: dict[str, str] = {}
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        return {**self.__dict__, "_client": None, "_runs": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def run_id(self, trial: Any) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial.trial_id}' and "
                          f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_run_id}'", max_results=1)
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            name = trial_run_name(trial.config)
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, MLFLOW_RUN_NAME: name, TRIAL_ID_TAG: trial.trial_id,
                "medtune.trial_dir": str(trial.path)}).info.run_id
            params = {**self.extra_params, **trial.config}
            self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        step, now = int(result["epoch"]), int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in result.items()
                   if (key in _METRIC_KEYS or key.startswith(_METRIC_PREFIXES))
                   and isinstance(value, int | float) and math.isfinite(value)]
        self.client.log_batch(self.run_id(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, OUTCOME_TAG, trial_outcome(trial.config, trial.last_result or {}))
        self._log_test_scores(run_id, trial)
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, OUTCOME_TAG, "errored")
        if trial.error_file and Path(trial.error_file).is_file():
            self.client.set_tag(run_id, "medtune.error", Path(trial.error_file).read_text()[-4000:])
        self._log_test_scores(run_id, trial)
        self.client.set_terminated(run_id, status="FAILED")

    def _log_test_scores(self, run_id: str, trial: Any) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            scores = Path(folder) / TEST_SCORES_FILE
            if scores.is_file():
                self.client.log_artifact(run_id, str(scores))
                self.client.set_tag(run_id, TEST_SCORES_TAG, TEST_SCORES_FILE)
