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
    VAL_SCORES_FILE,
    trial_outcome,
)
from tuner.tracking._dataset import dataset_input
from tuner.tracking._stage import confirm_tags, explore_tags, no_config_tags
from tuner.tracking._store import open_experiment, param_value

# The parent run's optimization history, one step per finished trial: the best-so-far of each progress
# key (ranked by the first), and how many trials have finished. A child run counted is tagged so.
FINISHED_TRIALS_METRIC = "search_finished_trials"
COUNTED_TAG = "medtune.counted_in_parent"
_PLACEMENT_TAGS = {"node_id": "medtune.node_id", "cuda_visible_devices": "medtune.cuda_visible_devices",
                   "stop_reason": "medtune.stop_reason", "checkpoint_warning": "medtune.checkpoint_warning"}


def trial_run_name(config: Mapping[str, Any]) -> str:
    """Readable and sortable, e.g. ``resnet50-convskip-u3-lr1e-03-imagenet-s0`` (``-f2`` for fold 2 of k)."""
    depth = {"topk": f"u{config.get('unfreeze')}"}.get(config.get("strategy"), config.get("strategy"))
    weights = str(config.get("weights"))
    source = weights if weights in ("none", "imagenet", "radimagenet") else weights.partition(":")[0] \
        if weights.startswith("ssl:") else "file"
    lr = config.get("lr", 0)
    fold = f"-f{config.get('fold')}" if config.get("folds") else ""
    # A timm backbone's "timm/<model>" must not become a folder level: Tune names trial folders by this.
    backbone = str(config.get("backbone")).replace("/", "-")
    return f"{backbone}-{config.get('head')}-{depth}-lr{lr:.0e}-{source}-s{config.get('seed')}{fold}"


def search_run_name(trial: Any) -> str:
    """A ``medtune tune`` trial's child-run name: its config in words (``trial_run_name``)."""
    return trial_run_name(trial.config)


@dataclass(frozen=True)
class RunLayout:
    """What a trial's child run holds, so the classifier search and the pretraining search share one
    resilient logger: the run's name, extra tags, which reported values are metrics, and the file of
    the trial's checkpoint logged when the trial ends (with the tag that records it was logged), and
    the tags read from a trial's config (``config_tags``: a classifier trial's stage and configuration),
    and the keys of a trial's last result whose best-so-far the parent run charts (``progress``, ranked
    by the first, each as ``search_<key>``; none: the parent charts nothing). Tune pickles the logger
    with its layout, so ``run_name`` and ``config_tags`` must be module-level functions (a layout
    pickled before ``config_tags`` or ``progress`` existed reads the class default)."""

    run_name: Callable[[Any], str] = search_run_name
    metric_keys: tuple[str, ...] = ("epoch", "lr", "n_params", "n_trainable_params", "stopped_by_patience",
                                    "phase_epoch", "settled_epoch", "n_train_images", "n_val_images",
                                    "diverged")
    metric_prefixes: tuple[str, ...] = ("train_", "val_", "test_", "gap_", "best_", "cost_")
    tags: tuple[tuple[str, str], ...] = ()
    config_tags: Callable[[Mapping[str, Any]], dict[str, str]] = no_config_tags
    final_artifact: str = TEST_SCORES_FILE
    final_artifact_tag: str = TEST_SCORES_TAG
    progress: tuple[str, ...] = ()
    # what to do once the store is back, if live logging could not catch up
    offline_fix: str = "run `medtune sync` with this search's --storage and --experiment to log what is missing"

    def metrics(self, result: Mapping[str, Any], timestamp_ms: int) -> list[Metric]:
        """The finite numbers of one Tune result that MLflow keeps (Tune adds its own bookkeeping, e.g.
        ``time_this_iter_s``), at step = epoch."""
        step = int(result["epoch"])
        return [Metric(key, float(value), timestamp_ms, step) for key, value in result.items()
                if (key in self.metric_keys or key.startswith(self.metric_prefixes))
                and isinstance(value, int | float) and math.isfinite(value)]


# A search's trials: the exploration stage, whose best-so-far the parent run charts.
SEARCH_RUNS = RunLayout(config_tags=explore_tags, progress=("best_score", "best_val_auc"))
# The confirmation stage's replicates, under the search's parent run.
CONFIRM_RUNS = RunLayout(config_tags=confirm_tags, offline_fix="run `medtune sync` with --experiment "
                         "<search>-confirm (and the search's --storage) to log what is missing")


class TrialRuns:
    """Brings trials' MLflow runs up to date; used live by the callback and afterwards by sync. A new
    run records ``dataset`` (a ``dataset_record``, when given) as its dataset input."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str,
                 extra_params: Mapping[str, Any], layout: RunLayout = SEARCH_RUNS,
                 dataset: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.extra_params = dict(extra_params)
        self.layout = layout
        self.dataset = dict(dataset) if dataset else None
        self._runs: dict[str, str] = {}
        self._epochs: dict[str, set[int]] = {}  # per trial, the epochs its run holds (read once per run)

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
            self._epochs[trial.trial_id] = set()
            params = {**self.extra_params, **trial.config}
            self.client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
            if self.dataset:
                self.client.log_inputs(run_id, [dataset_input(self.dataset)])
        self._runs[trial.trial_id] = run_id
        return run_id

    def log_result(self, trial: Any, result: Mapping[str, Any]) -> None:
        """One epoch's report: its metrics, the preprocessing the trial applied (``preprocess_*``, which
        only the trial knows: it comes from the weights), and where the trial ran. An epoch the run
        already holds is not logged again: a resumed trial re-runs the epochs since its last state
        checkpoint, with the same numbers (a bit-exact resume), and its run keeps one value per epoch."""
        run_id = self.run_id(trial)
        logged = self._epochs.get(trial.trial_id)
        if logged is None:
            logged = {int(m.step) for m in self.client.get_metric_history(run_id, "epoch")}
            self._epochs[trial.trial_id] = logged
        if int(result["epoch"]) not in logged:
            params = [Param(k, str(v)) for k, v in result.items() if k.startswith("preprocess_")]
            self.client.log_batch(run_id, metrics=self.layout.metrics(result, int(time.time() * 1000)),
                                  params=params)
            logged.add(int(result["epoch"]))
        for key, tag in _PLACEMENT_TAGS.items():  # the newest placement (and any checkpoint warning) either way
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
        self._log_progress(run_id, {} if errored else trial.last_result or {})

    def _log_progress(self, run_id: str, result: Mapping[str, Any]) -> None:
        """The parent run's next step of the optimization history (``RunLayout.progress``): the trials
        finished so far and the best-so-far values, read back from the parent's own history so that a
        resumed search or ``medtune sync`` continues it; once per trial (``COUNTED_TAG``)."""
        if not self.layout.progress or COUNTED_TAG in self.client.get_run(run_id).data.tags:
            return
        finished = self.client.get_metric_history(self.parent_run_id, FINISHED_TRIALS_METRIC)
        step = max((int(m.step) for m in finished), default=0) + 1
        best = {key: self._last(f"search_{key}") for key in self.layout.progress}
        rank = self.layout.progress[0]
        if _finite(result.get(rank)) and (best[rank] is None or result[rank] > best[rank]):
            best = {key: result.get(key) for key in self.layout.progress}
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(FINISHED_TRIALS_METRIC, float(step), now, step)] + [
            Metric(f"search_{key}", float(value), now, step) for key, value in best.items() if _finite(value)])
        self.client.set_tag(run_id, COUNTED_TAG, str(step))

    def _last(self, key: str) -> float | None:
        history = self.client.get_metric_history(self.parent_run_id, key)
        return max(history, key=lambda m: (m.step, m.timestamp)).value if history else None

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
                # the validation scores of the same epoch go beside it: they choose an ensemble's k
                if (Path(folder) / VAL_SCORES_FILE).is_file():
                    self.client.log_artifact(run_id, str(Path(folder) / VAL_SCORES_FILE))
                self.client.log_artifact(run_id, str(artifact))
                self.client.set_tag(run_id, self.layout.final_artifact_tag, self.layout.final_artifact)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """Tune's per-report results of one trial (``result.json``, one JSON object per line)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sync_experiment(experiment_dir: Path, tracking_uri: str, experiment_name: str, parent_run_id: str,
                    extra_params: Mapping[str, Any]) -> tuple[int, int]:
    """Back-fill MLflow from a search's (or a confirmation stage's) Tune folder; returns (trials, epochs
    added). Safe to repeat. The folder's ``SEARCH_FILE`` says its stage, hence its runs' layout, and
    holds the dataset input its new runs record."""
    from ray.tune import ExperimentAnalysis

    client, experiment_id = open_experiment(tracking_uri, experiment_name, None)
    search_file = experiment_dir / SEARCH_FILE
    record = json.loads(search_file.read_text()) if search_file.is_file() else {}
    runs = TrialRuns(client, experiment_id, parent_run_id, extra_params,
                     CONFIRM_RUNS if record.get("stage") == CONFIRM else SEARCH_RUNS, record.get("dataset_input"))
    trials = ExperimentAnalysis(str(experiment_dir)).trials
    added = sum(runs.catch_up(trial) for trial in trials)
    if all(t.status in ("TERMINATED", "ERROR") for t in trials):
        client.set_terminated(parent_run_id, status="FINISHED")
    return len(trials), added
