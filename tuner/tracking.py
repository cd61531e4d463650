"""MLflow logging of a search: one parent run per search, one nested child run per trial.

Logging happens on the driver, in a Tune callback, from the metrics trials report to Tune. Trials on
worker nodes therefore need no route to the tracking server, and everything logged can be rebuilt from
Tune's own results: when the tracking server is down, the search goes on, the logger retries every
``RECONNECT_S`` seconds and then catches up, and ``medtune sync`` back-fills a search at any time.
Catching up is idempotent: a trial's run is found by its trial-id tag, and only epochs not yet logged
are logged.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
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
# completed | stopped_early (ASHA) | early_stopping (patience) | diverged (non-finite loss) | errored
OUTCOME_TAG = "medtune.outcome"
TEST_SCORES_TAG = "medtune.test_scores"  # artifact path of the per-sample test scores, once logged
RECONNECT_S = 30.0
# What a trial reports that MLflow keeps (Tune adds its own bookkeeping, e.g. time_this_iter_s).
_METRIC_PREFIXES = ("train_", "val_", "test_", "gap_", "best_")
_METRIC_KEYS = ("epoch", "lr", "n_params", "n_trainable_params", "stopped_by_patience", "diverged")
_PLACEMENT_TAGS = {"node_id": "medtune.node_id", "cuda_visible_devices": "medtune.cuda_visible_devices",
                   "stop_reason": "medtune.stop_reason"}


def default_tracking_uri(storage: Path) -> str:
    return f"sqlite:///{storage / 'mlflow.db'}"


def redact(uri: str) -> str:
    """A URI with its password replaced, for logs and params: ``postgresql://u:***@host/db``."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's retries, when an HTTP tracking server does not answer."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(health, timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(f"the MLflow tracking server {redact(tracking_uri)} does not answer ({error}). Start "
                          "it, or fix --tracking-uri / $MLFLOW_TRACKING_URI.") from error


def open_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> tuple[MlflowClient, str]:
    """The MLflow experiment ``name`` (created if new); fails early if the store cannot be reached."""
    check_reachable(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return client, experiment.experiment_id
        location = artifact_root.as_uri() if artifact_root is not None else None
        return client, client.create_experiment(name, artifact_location=location)
    except Exception as error:  # mlflow raises many types for an unreachable store
        raise ConfigError(f"cannot reach the MLflow tracking store {redact(tracking_uri)!r} "
                          f"({type(error).__name__}: {str(error)[:300]}). Start the server or fix "
                          "--tracking-uri / $MLFLOW_TRACKING_URI.") from error


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
    """Readable and sortable, e.g. ``resnet50-convskip-u3-lr1e-03-imagenet-s0``."""
    depth = {"topk": f"u{config.get('unfreeze')}"}.get(config.get("strategy"), config.get("strategy"))
    weights = str(config.get("weights"))
    source = weights if weights in ("none", "imagenet", "radimagenet") else weights.partition(":")[0] \
        if weights.startswith("ssl:") else "file"
    lr = config.get("lr", 0)
    return f"{config.get('backbone')}-{config.get('head')}-{depth}-lr{lr:.0e}-{source}-s{config.get('seed')}"


def trial_outcome(config: Mapping[str, Any], last_result: Mapping[str, Any]) -> str:
    """How a trial that ended without an error ended: all its epochs, its loss diverging, its own
    early stopping (patience), or stopped by the scheduler (ASHA)."""
    if last_result.get("diverged"):
        return "diverged"
    if last_result.get("stopped_by_patience"):
        return "early_stopping"
    return "completed" if last_result.get("epoch", 0) >= config.get("epochs", 0) else "stopped_early"


def _param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _metrics(result: Mapping[str, Any], timestamp_ms: int) -> list[Metric]:
    step = int(result["epoch"])
    return [Metric(key, float(value), timestamp_ms, step) for key, value in result.items()
            if (key in _METRIC_KEYS or key.startswith(_METRIC_PREFIXES))
            and isinstance(value, int | float) and math.isfinite(value)]


class TrialRuns:
    """Brings trials' MLflow runs up to date; used live by the callback and afterwards by sync."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str,
                 extra_params: Mapping[str, Any]) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.extra_params = dict(extra_params)
        self._runs: dict[str, str] = {}

    def run_id(self, trial: Any) -> str:
        """The trial's child run: found by its trial-id tag, else created with its params."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial.trial_id}' and "
                          f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_run_id}'", max_results=1)
        if existing:
            run_id = existing[0].info.run_id
        else:
            name = trial_run_name(trial.config)
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, MLFLOW_RUN_NAME: name, TRIAL_ID_TAG: trial.trial_id,
                "medtune.trial_dir": str(trial.path)}).info.run_id
            params = {**self.extra_params, **trial.config}
            self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        self._runs[trial.trial_id] = run_id
        return run_id

    def log_result(self, trial: Any, result: Mapping[str, Any]) -> None:
        run_id = self.run_id(trial)
        self.client.log_batch(run_id, metrics=_metrics(result, int(time.time() * 1000)))
        for key, tag in _PLACEMENT_TAGS.items():
            if result.get(key) not in (None, ""):
                self.client.set_tag(run_id, tag, str(result[key]))

    def finish(self, trial: Any, *, errored: bool) -> None:
        run_id = self.run_id(trial)
        outcome = "errored" if errored else trial_outcome(trial.config, trial.last_result or {})
        self.client.set_tag(run_id, OUTCOME_TAG, outcome)
        if errored and trial.error_file and Path(trial.error_file).is_file():
            self.client.set_tag(run_id, "medtune.error", Path(trial.error_file).read_text()[-4000:])
        self._log_test_scores(run_id, trial)
        self.client.set_terminated(run_id, status="FAILED" if errored else "FINISHED")

    def catch_up(self, trial: Any) -> int:
        """Log what the trial's Tune results hold and MLflow lacks; returns the epochs added."""
        run_id = self.run_id(trial)
        logged = {int(m.step) for m in self.client.get_metric_history(run_id, "epoch")}
        missing = [r for r in read_results(Path(trial.path)) if "epoch" in r and int(r["epoch"]) not in logged]
        for result in missing:
            self.log_result(trial, result)
        run = self.client.get_run(run_id)
        if trial.status in ("TERMINATED", "ERROR") and (run.info.status == "RUNNING" or missing
                                                         or TEST_SCORES_TAG not in run.data.tags):
            self.finish(trial, errored=trial.status == "ERROR")
        return len(missing)

    def _log_test_scores(self, run_id: str, trial: Any) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None or TEST_SCORES_TAG in self.client.get_run(run_id).data.tags:
            return
        with checkpoint.as_directory() as folder:
            scores = Path(folder) / TEST_SCORES_FILE
            if scores.is_file():
                self.client.log_artifact(run_id, str(scores))
                self.client.set_tag(run_id, TEST_SCORES_TAG, TEST_SCORES_FILE)


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """Tune's per-report results of one trial (``result.json``, one JSON object per line)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MlflowTrialLogger(tune.Callback):
    """Logs each trial live: its child run, its per-epoch metrics (step = epoch), and at its end its
    outcome and the test scores of its best-validation model. If the tracking server fails, the search
    is not stopped: logging pauses, is retried every ``RECONNECT_S`` seconds, and catches up from the
    trials' results once the server answers again."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 extra_params: Mapping[str, Any]) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.extra_params = dict(extra_params)
        self.offline_since: float | None = None
        self._runs: TrialRuns | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        return {**self.__dict__, "_runs": None, "offline_since": None}

    @property
    def runs(self) -> TrialRuns:
        if self._runs is None:
            self._runs = TrialRuns(MlflowClient(self.tracking_uri), self.experiment_id, self.parent_run_id,
                                   self.extra_params)
        return self._runs

    def _guarded(self, trials: list, action) -> None:
        if self.offline_since is not None:
            if time.monotonic() - self.offline_since < RECONNECT_S:
                return
            try:
                for trial in trials:
                    self.runs.catch_up(trial)
            except Exception:  # still down: try again later
                self.offline_since = time.monotonic()
                return
            self.offline_since = None
            print("medtune: MLflow answers again; logging caught up.", file=sys.stderr, flush=True)
            return  # catch_up has logged this event's data too
        try:
            action()
        except Exception as error:
            self.offline_since = time.monotonic()
            print(f"medtune: MLflow logging failed ({type(error).__name__}: {str(error)[:200]}); the search goes "
                  f"on, and logging resumes when {redact(self.tracking_uri)} answers (or run `medtune sync`).",
                  file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.run_id(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.log_result(trial, result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.finish(trial, errored=False))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.finish(trial, errored=True))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.offline_since is not None:
            self.offline_since = float("-inf")  # one last try, now
            self._guarded(trials, lambda: None)
        if self.offline_since is not None:
            print("medtune: MLflow is still unreachable; once it is back, run `medtune sync` with this search's "
                  "--storage and --experiment to log what is missing.", file=sys.stderr, flush=True)


def sync_experiment(experiment_dir: Path, tracking_uri: str, experiment_name: str, parent_run_id: str,
                    extra_params: Mapping[str, Any]) -> tuple[int, int]:
    """Back-fill MLflow from a search's Tune folder; returns (trials, epochs added). Safe to repeat."""
    from ray.tune import ExperimentAnalysis

    client, experiment_id = open_experiment(tracking_uri, experiment_name, None)
    runs = TrialRuns(client, experiment_id, parent_run_id, extra_params)
    trials = ExperimentAnalysis(str(experiment_dir)).trials
    added = sum(runs.catch_up(trial) for trial in trials)
    if all(t.status in ("TERMINATED", "ERROR") for t in trials):
        client.set_terminated(parent_run_id, status="FINISHED")
    return len(trials), added
