"""Trials from MLflow: a search's experiment holds its parent run (``ROLE_TAG`` = search) and one child
run per trial, exploration and confirmation alike (``STAGE_TAG`` tells them apart)."""

from __future__ import annotations

from pathlib import Path

from analysis.records import Collected, SearchInfo, identity, normal, parsed, stage_of
from tuner.errors import ConfigError
from tuner.schema import (
    CONFIG_ID_TAG,
    ERRORED,
    OUTCOME_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SEARCH_FILE,
    STAGE_TAG,
    TEST_SCORES_TAG,
    TRIAL_ID_TAG,
)

TRIAL_DIR_TAG = "medtune.trial_dir"  # where TrialRuns records the trial's Tune folder


def read_mlflow(names: list[str], uri: str, storage: Path) -> Collected:
    """Every finished trial run of the named MLflow experiments, and each search's details from its
    newest parent run. Unreachable stores and unknown names are ConfigErrors that say what to do."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        found = {name: client.get_experiment_by_name(name) for name in names}
    except Exception as error:  # mlflow raises many types for an unreachable store
        raise ConfigError(
            f"cannot reach the MLflow tracking store {uri!r} ({type(error).__name__}: {str(error)[:300]}). "
            "Start the server or fix --tracking-uri, or analyze the Tune folder alone with --offline."
        ) from error
    collected = Collected()
    for name, experiment in found.items():
        if experiment is None:
            offline = (storage / name / SEARCH_FILE).is_file()
            raise ConfigError(
                f"no MLflow experiment named {name!r} in {uri}. Check --experiment and --tracking-uri / "
                "--storage."
                + (f" The Tune folder {storage / name} exists: --offline analyzes it without MLflow."
                   if offline else "")
            )
        info = SearchInfo(name, location=uri)
        parents = {}
        for run in _all_runs(client, experiment.experiment_id):
            tags = run.data.tags
            if tags.get(ROLE_TAG) == "search":
                parents[run.info.run_id] = run
                continue
            if TRIAL_ID_TAG not in tags:
                continue
            stage = stage_of(tags.get(STAGE_TAG))
            if run.info.status == "FAILED" or tags.get(OUTCOME_TAG) == ERRORED:
                info.add(stage, "errored")
                continue
            if run.info.status != "FINISHED":
                info.add(stage, "unfinished")
                continue
            info.add(stage, "finished")
            raw = {key: parsed(value) for key, value in run.data.params.items()}
            config = {key: normal(value) for key, value in raw.items()}
            row = collected.row(name, tags[TRIAL_ID_TAG], config, dict(run.data.metrics))
            row.update(
                stage=stage,
                config_id=tags.get(CONFIG_ID_TAG) or identity(raw),
                run_name=run.info.run_name,
                parent_run_id=tags.get(PARENT_TAG),
                outcome=tags.get(OUTCOME_TAG),
                run_id=run.info.run_id,
                trial_dir=tags.get(TRIAL_DIR_TAG),
                test_scores=f"{run.info.artifact_uri}/{tags[TEST_SCORES_TAG]}" if TEST_SCORES_TAG in tags else None,
            )
        if parents:
            parent = max(parents.values(), key=lambda run: run.info.start_time)
            p = parent.data.params
            info.parent_run_id = parent.info.run_id
            info.space, info.task, info.search = p.get("space"), p.get("task"), p.get("search")
            info.dataset = p.get("dataset")
            info.optuna_storage = p.get("optuna_storage")
        collected.searches.append(info)
    return collected


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs
