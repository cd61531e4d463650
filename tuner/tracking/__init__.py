"""MLflow logging: the tracking store a command logs to, one parent run per search, one nested child
run per trial.

Logging happens on the driver, in a Tune callback, from the metrics trials report to Tune. Trials on
worker nodes therefore need no route to the tracking server, and everything logged can be rebuilt from
Tune's own results: when the tracking server is down, the search goes on, the logger retries every
``RECONNECT_S`` seconds and then catches up, and ``medtune sync`` back-fills a search at any time.

- ``_store``: choosing the store (``--tracking-uri``, ``$MLFLOW_TRACKING_URI``, SQLite in the results
  folder), reaching it, its experiment, and top-level runs;
- ``_runs``: what a trial's child run holds (``RunLayout``) and bringing it up to date (``TrialRuns``);
- ``_dataset``: a trial's data set as an MLflow dataset input (the runs table's Dataset column);
- ``_stage``: the stage (explore | confirm) and configuration-identity tags of a classifier trial's run;
- ``_logger``: the resilient Tune callback (``MlflowTrialLogger``), shared by ``medtune tune`` and
  ``medtune pretrain --search``.
"""

from tuner.tracking._dataset import DATASET_CONTEXT, dataset_input, dataset_record
from tuner.tracking._logger import RECONNECT_S, MlflowTrialLogger
from tuner.tracking._runs import (
    CONFIRM_RUNS,
    COUNTED_TAG,
    FINISHED_TRIALS_METRIC,
    OUTCOME_TAG,
    SEARCH_RUNS,
    TEST_SCORES_TAG,
    TRIAL_ID_TAG,
    RunLayout,
    TrialRuns,
    read_results,
    search_run_name,
    sync_experiment,
    trial_outcome,
    trial_run_name,
)
from tuner.tracking._stage import confirm_tags, explore_tags, trial_config_id
from tuner.tracking._store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    ROLE_TAG,
    TRACKING_URI_ENV,
    TrackingStore,
    artifact_root,
    check_reachable,
    default_tracking_uri,
    git_commit,
    limit_mlflow_retries,
    open_experiment,
    open_store,
    param_value,
    redact,
    resolve_tracking_uri,
    runs_page,
    start_run,
)

__all__ = ["CONFIRM_RUNS", "COUNTED_TAG", "DATASET_CONTEXT", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG",
           "FINISHED_TRIALS_METRIC", "OUTCOME_TAG", "RECONNECT_S", "ROLE_TAG", "SEARCH_RUNS", "TEST_SCORES_TAG",
           "TRACKING_URI_ENV", "TRIAL_ID_TAG", "MlflowTrialLogger", "RunLayout", "TrackingStore", "TrialRuns",
           "artifact_root", "check_reachable", "confirm_tags", "dataset_input", "dataset_record",
           "default_tracking_uri", "explore_tags", "git_commit", "limit_mlflow_retries", "open_experiment",
           "open_store", "param_value", "read_results", "redact", "resolve_tracking_uri", "runs_page",
           "search_run_name", "start_run", "sync_experiment", "trial_config_id", "trial_outcome", "trial_run_name"]
