"""A search: check everything, load the data once, then let Ray Tune run the trials.

The jobs live in their own modules and meet here: the request and its checks (``search_request``),
the arms' equal budgets (``arms``), Ray start-up (``cluster``), the tracking store (``tracking``), the
Optuna studies (``optuna_study``), the Tuner (``tune_build``), its results (``tune_results``) and the
outcome (``search_summary``).
The trainable every trial worker runs is ``tuner.training.trainable.tune_trial``: defined here, it would
make every worker import all of the above.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from search_spaces import space_arms
from tuner.arms import arm_plan
from tuner.cluster import init_ray
from tuner.data import load_dataset, resolve_data_root
from tuner.data.medmnist import medmnist_path
from tuner.errors import ConfigError
from tuner.interrupt import SearchInterrupted, graceful_stop
from tuner.model_export import log_search_model
from tuner.optuna_study import optuna_storage_url, refuse_existing_studies
from tuner.schema import SEARCH_FILE
from tuner.search_request import SearchRequest, prepare
from tuner.search_summary import SearchOutcome, summarise
from tuner.terminal import LOG_FILE, say
from tuner.tracking import (
    MlflowTrialLogger,
    dataset_record,
    open_store,
    redact,
    resolve_tracking_uri,
    start_run,
    sync_experiment,
)
from tuner.training.checkpoint import CheckpointPolicy
from tuner.training.trainable import tune_trial
from tuner.tune_build import search_tuner, with_data
from tuner.tune_results import fit_results

__all__ = ["SEARCH_FILE", "SearchOutcome", "SearchRequest", "prepare", "run_search", "sync_search"]


def run_search(request: SearchRequest) -> SearchOutcome:
    """Run (or, with ``request.resume``, continue) a search to its end: every check first, then the
    trials on Ray, each logged to MLflow as it runs, and each sampled trial told to its arm's Optuna
    study; returns the counts, the trials each arm got, and the best trial."""
    from ray import tune

    space, configs = prepare(request)
    plan = arm_plan(space_arms(space), configs, request.num_samples, grid=request.search == "grid")
    storage = Path(request.storage).expanduser().resolve()
    name = request.experiment or f"{request.space}-{Path(request.dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_dir = storage / name
    search_file = experiment_dir / SEARCH_FILE
    if request.resume and not search_file.is_file():
        raise ConfigError(f"--resume: no search to resume in {experiment_dir} (no {SEARCH_FILE}). Check "
                          "--storage and --experiment.")
    if not request.resume and experiment_dir.exists():
        raise ConfigError(f"{experiment_dir} already holds a search. Pass --resume to continue it, or choose "
                          "another --experiment name.")
    data = load_dataset(request.dataset, request.data_root, patient_regex=request.patient_regex)
    store = open_store(storage, name, request.tracking_uri)
    optuna_url = optuna_storage_url(storage, store.tracking_uri)
    if not request.resume:
        refuse_existing_studies(optuna_url, name)
    init_ray(request.cpus_per_trial, request.gpus_per_trial)

    trainable = with_data(tune_trial, data, request.cpus_per_trial, request.gpus_per_trial,
                          policy=CheckpointPolicy(request.checkpoint_every, request.checkpoint_seconds))
    if request.resume:
        saved = json.loads(search_file.read_text())
        parent_run_id = saved["parent_run_id"]
        runner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_errored=True)
    else:
        record = {**asdict(request), "tracking_uri": redact(store.tracking_uri)}
        studies = {"optuna_storage": optuna_url} if plan.share is not None else {}
        parent_run_id = start_run(store.client, store.experiment_id, name, {
            **{k: v for k, v in record.items() if k not in ("pins", "resume")},
            "pins": request.pins, "dataset": data.name, "task": data.task, "grid_size": len(configs),
            "arms": plan.record(), **studies,
            **({"data_warnings": list(data.data_warnings)} if data.data_warnings else {}),
        }, role="search", artifacts={"search_space": Path(space.__file__)})
        dataset = dataset_record(data, _data_source(request))
        logger = MlflowTrialLogger(store.tracking_uri, store.experiment_id, parent_run_id, {"dataset": data.name},
                                   dataset=dataset)
        runner = search_tuner(request, configs, plan, trainable, storage, name, logger, optuna_url)
        experiment_dir.mkdir(parents=True, exist_ok=True)
        saved = {"parent_run_id": parent_run_id, "experiment": name, "trial_params": {"dataset": data.name},
                 "request": record, "arms": plan.record(), "dataset_input": dataset, **studies}
        search_file.write_text(json.dumps(saved, indent=2))
    say(f"medtune: search {name!r} ({request.search}, space {request.space}, data {data.name}): Tune results in "
        f"{experiment_dir}; MLflow {redact(store.tracking_uri)} "
        f"(parent run {parent_run_id}); libraries' logs in {storage / LOG_FILE}")
    for line in data.data_warnings:  # the integrity check's warnings (possible leakage), also a parent-run param
        say(f"medtune: warning: data set {data.name!r}: {line}")
    if plan.share is not None:
        arms = (f"{len(plan.cells)} arms ({' x '.join(plan.factors)}), {plan.share} trials each; "
                if plan.factors else "")
        say(f"medtune: {arms}Optuna studies in {optuna_url} (optuna-dashboard {optuna_url})")
    with graceful_stop() as stop:  # Ctrl-C / SIGTERM: trials stopped, state saved (tuner.interrupt)
        try:
            results = fit_results(runner, experiment_dir)
        except KeyboardInterrupt:  # a second signal: out at once
            raise SearchInterrupted(name, experiment_dir, stop.signum or 2, forced=True) from None
    if stop.signum is not None:  # the parent run stays open: --resume continues it
        raise SearchInterrupted(name, experiment_dir, stop.signum)
    outcome = summarise(results, name, experiment_dir, store.tracking_uri, parent_run_id, plan, store.experiment_id)
    log_search_model(outcome, data, request.register)
    search_file.write_text(json.dumps({**saved, "trials_per_arm": outcome.trials_per_arm}, indent=2))
    try:
        store.client.set_terminated(parent_run_id, status="FINISHED" if outcome.errored < outcome.trials else "FAILED")
    except Exception as error:  # the tracking server is down: the results are safe in Tune's folder
        print(f"medtune: could not close the parent MLflow run ({type(error).__name__}); `medtune sync` will.",
              file=sys.stderr, flush=True)
    return outcome


def sync_search(storage: str, experiment: str, tracking_uri: str | None = None) -> tuple[int, int]:
    """Back-fill MLflow from the Tune folder of a search (after the tracking server was down)."""
    experiment_dir = Path(storage).expanduser().resolve() / experiment
    search_file = experiment_dir / SEARCH_FILE
    if not search_file.is_file():
        raise ConfigError(f"no search in {experiment_dir} (no {SEARCH_FILE}). Check --storage and --experiment.")
    saved = json.loads(search_file.read_text())
    uri = resolve_tracking_uri(tracking_uri, experiment_dir.parent)
    return sync_experiment(experiment_dir, uri, saved["experiment"], saved["parent_run_id"], saved["trial_params"])


def _data_source(request: SearchRequest) -> str:
    """The file or folder the data set was read from: the dataset input's source."""
    given = Path(request.dataset).expanduser()
    if given.exists():
        return str(given.resolve())
    return str(medmnist_path(request.dataset, resolve_data_root(request.data_root)))
