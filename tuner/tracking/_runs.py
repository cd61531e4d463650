"""Trials' child runs: what each holds (``RunLayout``), bringing them up to date from what Tune
recorded (``TrialRuns``), and back-filling a whole search (``sync_experiment``).

Catching up is idempotent: a trial's run is found by its trial-id tag, and only epochs not yet logged
are logged, so the live logger and ``medtune sync`` can both call it any number of times.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from tuner.schema import (
    CONFIRM,
    OUTCOME_TAG,
    SEARCH_FILE,
    TEST_SCORES_FILE,
    TEST_SCORES_TAG,
    TRIAL_ID_TAG,
    trial_outcome,
)
from tuner.tracking._stage import confirm_tags, explore_tags, no_config_tags
from tuner.tracking._store import open_experiment, param_value

_PLACEMENT_TAGS = {"node_id": "medtune.node_id", "cuda_visible_devices": "medtune.cuda_visible_devices",
                   "stop_reason": "medtune.stop_reason"}


def trial_run_name(config: Mapping[str, Any]) -> str:
    """Readable and sortable, e.g. ``resnet50-convskip-u3-lr1e-03-imagenet-s0`` (``-f2`` for fold 2 of k)."""
    depth = {"topk": f"u{config.get('unfreeze')}"}.get(config.get("strategy"), config.get("strategy"))
    weights = str(config.get("weights"))
    source = weights if weights in ("none", "imagenet", "radimagenet") else weights.partition(":")[0] \
        if weights.startswith("ssl:") else "file"
    lr = config.get("lr", 0)
    fold = f"-f{config.get('fold')}" if config.get("folds") else ""
    return f"{config.get('backbone')}-{config.get('head')}-{depth}-lr{lr:.0e}-{source}-s{config.get('seed')}{fold}"


def search_run_name(trial: Any) -> str:
    """A ``medtune tune`` trial's child-run name: its config in words (``trial_run_name``)."""
    return trial_run_name(trial.config)


@dataclass(frozen=True)
class RunLayout:
    """What a trial's child run holds, so the classifier search and the pretraining search share one
    resilient logger: the run's name, extra tags, which reported values are metrics, and the file of
    the trial's checkpoint logged when the trial ends (with the tag that records it was logged), and
    the tags read from a trial's config (``config_tags``: a classifier trial's stage and configuration).
    Tune pickles the logger with its layout, so ``run_name`` and ``config_tags`` must be module-level
    functions (a layout pickled before ``config_tags`` existed reads the class default)."""

    run_name: Callable[[Any], str] = search_run_name
    metric_keys: tuple[str, ...] = ("epoch", "lr", "n_params", "n_trainable_params", "stopped_by_patience",
                                    "phase_epoch", "settled_epoch", "n_train_images", "n_val_images",
                                    "diverged")
    metric_prefixes: tuple[str, ...] = ("train_", "val_", "test_", "gap_", "best_")
    tags: tuple[tuple[str, str], ...] = ()
    config_tags: Callable[[Mapping[str, Any]], dict[str, str]] = no_config_tags
    final_artifact: str = TEST_SCORES_FILE
    final_artifact_tag: str = TEST_SCORES_TAG
    # what to do once the store is back, if live logging could not catch up
    offline_fix: str = "run `medtune sync` with this search's --storage and --experiment to log what is missing"

    def metrics(self, result: Mapping[str, Any], timestamp_ms: int) -> list[Metric]:
        """The finite numbers of one Tune result that MLflow keeps (Tune adds its own bookkeeping, e.g.
        ``time_this_iter_s``), at step = epoch."""
        step = int(result["epoch"])
        return [Metric(key, float(value), timestamp_ms, step) for key, value in result.items()
                if (key in self.metric_keys or key.startswith(self.metric_prefixes))
                and isinstance(value, int | float) and math.isfinite(value)]


SEARCH_RUNS = RunLayout(config_tags=explore_tags)  # a search's trials: the exploration stage
# The confirmation stage's replicates, under the search's parent run.
CONFIRM_RUNS = RunLayout(config_tags=confirm_tags, offline_fix="run `medtune sync` with --experiment "
                         "<search>-confirm (and the search's --storage) to log what is missing")


class TrialRuns:
    """Brings trials' MLflow runs up to date; used live by the callback and afterwards by sync."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str,
                 extra_params: Mapping[str, Any], layout: RunLayout = SEARCH_RUNS) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.extra_params = dict(extra_params)
        self.layout = layout
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
            name = self.layout.run_name(trial)
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, MLFLOW_RUN_NAME: name, TRIAL_ID_TAG: trial.trial_id,
                "medtune.trial_dir": str(trial.path), **dict(self.layout.tags),
                **self.layout.config_tags(trial.config)}).info.run_id
            params = {**self.extra_params, **trial.config}
            self.client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
        self._runs[trial.trial_id] = run_id
        return run_id

    def log_result(self, trial: Any, result: Mapping[str, Any]) -> None:
        """One epoch's report: its metrics, and where the trial ran."""
        run_id = self.run_id(trial)
        self.client.log_batch(run_id, metrics=self.layout.metrics(result, int(time.time() * 1000)))
        for key, tag in _PLACEMENT_TAGS.items():
            if result.get(key) not in (None, ""):
                self.client.set_tag(run_id, tag, str(result[key]))

    def finish(self, trial: Any, *, errored: bool) -> None:
        """The trial's end: its outcome, its error, its checkpoint's final artifact, the run closed."""
        run_id = self.run_id(trial)
        outcome = "errored" if errored else trial_outcome(trial.config, trial.last_result or {})
        self.client.set_tag(run_id, OUTCOME_TAG, outcome)
        if errored and trial.error_file and Path(trial.error_file).is_file():
            self.client.set_tag(run_id, "medtune.error", Path(trial.error_file).read_text()[-4000:])
        self._log_final_artifact(run_id, trial)
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
                                                         or self.layout.final_artifact_tag not in run.data.tags):
            self.finish(trial, errored=trial.status == "ERROR")
        return len(missing)

    def _log_final_artifact(self, run_id: str, trial: Any) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None or self.layout.final_artifact_tag in self.client.get_run(run_id).data.tags:
            return
        with checkpoint.as_directory() as folder:
            artifact = Path(folder) / self.layout.final_artifact
            if artifact.is_file():
                self.client.log_artifact(run_id, str(artifact))
                self.client.set_tag(run_id, self.layout.final_artifact_tag, self.layout.final_artifact)


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """Tune's per-report results of one trial (``result.json``, one JSON object per line)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sync_experiment(experiment_dir: Path, tracking_uri: str, experiment_name: str, parent_run_id: str,
                    extra_params: Mapping[str, Any]) -> tuple[int, int]:
    """Back-fill MLflow from a search's (or a confirmation stage's) Tune folder; returns (trials, epochs
    added). Safe to repeat. The folder's ``SEARCH_FILE`` says its stage, hence its runs' layout."""
    from ray.tune import ExperimentAnalysis

    client, experiment_id = open_experiment(tracking_uri, experiment_name, None)
    search_file = experiment_dir / SEARCH_FILE
    stage = json.loads(search_file.read_text()).get("stage") if search_file.is_file() else None
    runs = TrialRuns(client, experiment_id, parent_run_id, extra_params,
                     CONFIRM_RUNS if stage == CONFIRM else SEARCH_RUNS)
    trials = ExperimentAnalysis(str(experiment_dir)).trials
    added = sum(runs.catch_up(trial) for trial in trials)
    if all(t.status in ("TERMINATED", "ERROR") for t in trials):
        client.set_terminated(parent_run_id, status="FINISHED")
    return len(trials), added
