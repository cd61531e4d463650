"""The confirmation stage: the search chose candidates, this stage concludes.

A search's trials ran at unequal budgets (ASHA stops some, patience others) with one seed each, so
their test scores mix final performance with learning fast early and surviving ASHA. The confirmation
stage re-trains the configurations chosen on validation (``tuner.confirm_select``) at their full
``epochs`` with no early stopping of any kind (a FIFO scheduler, ``patience=None``), each with the same
number of fresh seeds (``FIRST_SEED`` on, never a seed the search used) and, with ``folds``, on each
fold: replicates, on which the analysis can base its conclusions.

It runs through Ray Tune with the search's trainable, as a grid of preset points, in its own Tune
folder ``<storage>/<search>-confirm/`` (with its own ``SEARCH_FILE``, ``"stage": "confirm"``), and logs
its runs under the search's MLflow parent run as a second group of children tagged
``medtune.stage=confirm`` (``tuner.tracking.CONFIRM_RUNS``). ``resume`` continues an interrupted stage
(``Tuner.restore``): finished runs are not repeated.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuner.cluster import init_ray
from tuner.config import TRIAL_DEFAULTS, make_trial_config
from tuner.confirm_select import Candidate, Selection, load_search, saved_request, select
from tuner.data import load_dataset
from tuner.errors import ConfigError
from tuner.model_export import log_confirmed_model
from tuner.options import CONFIRM_OPTIONS, check_options
from tuner.schema import (
    COMPLETED,
    CONFIRM,
    DIVERGED,
    ERRORED,
    SEARCH_FILE,
    STOPPED_EARLY,
    confirm_experiment,
    trial_outcome,
)
from tuner.search_request import fit_all_weights
from tuner.terminal import say
from tuner.tracking import CONFIRM_RUNS, MlflowTrialLogger, open_store, redact, trial_config_id, trial_run_name
from tuner.training.checkpoint import CHECKPOINT_RANK
from tuner.training.trainable import tune_trial
from tuner.tune_build import make_tuner, with_data
from tuner.tune_results import fit_results

FIRST_SEED = 1000  # replicate seeds start here (or above the search's largest seed)


@dataclass
class ConfirmRequest:
    """The options of ``medtune confirm`` (and of ``medtune tune --confirm-*``), as a value. ``selection``
    and ``seeds`` are required for a new stage; with ``resume`` they may be left out (the stage's own
    record holds them) but, if given, must match. Resources default to the search's."""

    experiment: str
    selection: Selection | None = None
    seeds: int | None = None
    folds: int | None = None
    storage: str = "results"
    tracking_uri: str | None = None
    resume: bool = False
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    data_root: str | None = None
    register: str | None = None  # register the confirmed best model under this name (`--register`)


@dataclass
class ConfirmOutcome:
    """What a confirmation stage chose and ran, and where its results are."""

    experiment_dir: Path
    tracking_uri: str
    parent_run_id: str
    search: str
    selection: str
    metric: str
    chosen: list[Candidate]
    seeds: list[int]
    folds: int | None
    runs: int
    completed: int
    errored: int
    diverged: int
    unfinished: int  # not yet at their full epochs: the stage was interrupted (continue it with resume)
    model_uri: str | None = None  # the confirmed best model on the parent run (``tuner.model_export``)
    registered: str | None = None  # its registered name and version, with --register


def confirm_dir(storage: str | Path, experiment: str) -> Path:
    """The Tune folder of the confirmation stage of the search ``experiment``."""
    return Path(storage).expanduser().resolve() / confirm_experiment(experiment)


def check_request(request: ConfirmRequest) -> None:
    """The checks that need no search folder, so ``medtune tune --confirm-*`` fails before searching."""
    if not request.resume and (request.selection is None or request.seeds is None):
        raise ConfigError("confirm: choose what to re-run (--top-k K, --per-level FACTORS or --factorial FACTORS) "
                          "and how often (--seeds N).")
    top_k = (request.selection.k or 0) if request.selection is not None and request.selection.rule == "top_k" else None
    check_options({**vars(request), "top_k": top_k}, CONFIRM_OPTIONS)  # the options' declared ranges


def fresh_seeds(used: frozenset[int] | set[int], count: int) -> list[int]:
    """``count`` seeds none of the search's trials used: from ``FIRST_SEED``, or above its largest seed."""
    start = max(FIRST_SEED, max(used, default=-1) + 1)
    return list(range(start, start + count))


def replicate_configs(chosen: list[Candidate], seeds: list[int], folds: int | None) -> list[dict[str, Any]]:
    """The runs of the stage: each chosen configuration with each seed (on each fold), at its full
    ``epochs`` and with its own early stopping off (``patience=None``), checked."""
    return [make_trial_config({**candidate.config, "seed": seed, "patience": None,
                               **({"folds": folds, "fold": fold} if folds else {})})
            for candidate in chosen for fold in range(folds or 1) for seed in seeds]


def run_confirm(request: ConfirmRequest) -> ConfirmOutcome:
    """Choose (or, with ``resume``, re-read) the configurations, then run every replicate on Ray, logged
    under the search's parent run; returns what was chosen and how the runs ended."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    check_request(request)
    storage = Path(request.storage).expanduser().resolve()
    directory = confirm_dir(storage, request.experiment)
    search_file = directory / SEARCH_FILE
    if request.resume:
        if not search_file.is_file():
            raise ConfigError(f"--resume: no confirmation stage to resume in {directory} (no {SEARCH_FILE}). Drop "
                              "--resume to start one, or check --storage and --experiment.")
        record = json.loads(search_file.read_text())
        _check_unchanged(request, record)
        configs: list[dict[str, Any]] = []
    else:
        if directory.exists():
            raise ConfigError(f"{directory} already holds a confirmation stage of {request.experiment!r}. Pass "
                              "--resume to continue it, or remove that folder to start again.")
        search = load_search(storage, request.experiment)
        chosen = select(search, request.selection)
        seeds = fresh_seeds(search.seeds, request.seeds)
        configs = replicate_configs(chosen, seeds, request.folds)
        fit_all_weights(configs)  # a weights file changed since the search: refused here
        record = _record(request, search.record, chosen, seeds, str(search.directory))
    search_request = saved_request(record["request"])
    cpus = request.cpus_per_trial or search_request.cpus_per_trial
    gpus = search_request.gpus_per_trial if request.gpus_per_trial is None else request.gpus_per_trial
    data = load_dataset(search_request.dataset, request.data_root or search_request.data_root,
                        patient_regex=record["request"].get("patient_regex"))
    saved_uri = record["request"].get("tracking_uri") or ""
    store = open_store(storage, record["experiment"], request.tracking_uri or
                       (saved_uri if "***" not in saved_uri else None))
    parent_run_id = record["parent_run_id"]
    try:
        store.client.get_run(parent_run_id)
    except Exception as error:  # mlflow raises many types for a missing run
        raise ConfigError(f"the search's parent run {parent_run_id} is not in the MLflow store "
                          f"{redact(store.tracking_uri)}. Pass the search's --tracking-uri.") from error
    init_ray(cpus, gpus)

    trainable = with_data(tune_trial, data, cpus, gpus)
    if request.resume:
        runner = tune.Tuner.restore(str(directory), trainable=trainable, resume_errored=True)
    else:
        logger = MlflowTrialLogger(store.tracking_uri, store.experiment_id, parent_run_id, record["trial_params"],
                                   layout=CONFIRM_RUNS, dataset=record.get("dataset_input"))
        runner = make_tuner(trainable, name=directory.name, storage=storage, metric=search_request.metric,
                            mode="max", scheduler=FIFOScheduler(),
                            search_alg=BasicVariantGenerator(points_to_evaluate=configs), num_samples=len(configs),
                            trial_name=_trial_name, callbacks=[logger],
                            # Tune takes preset points only for keys its param_space names.
                            param_space={key: None for key in TRIAL_DEFAULTS},
                            max_failures=search_request.max_failures, checkpoint_rank=CHECKPOINT_RANK)
        directory.mkdir(parents=True, exist_ok=True)  # the Tuner has made it
        search_file.write_text(json.dumps(record, indent=2))
        store.client.log_artifact(parent_run_id, str(search_file), artifact_path="confirm")
        store.client.set_tag(parent_run_id, "medtune.confirm_dir", str(directory))
    say(f"medtune: confirmation of {request.experiment!r} ({record['selection']['describe']}): "
        f"{record['runs']} runs, seeds {record['seeds']}; Tune results in {directory}; MLflow "
        f"{redact(store.tracking_uri)} (parent run {parent_run_id})")
    results = fit_results(runner, directory)
    ended = Counter(_ended(result) for result in results)
    model_uri, registered = log_confirmed_model(results, store.tracking_uri, parent_run_id, data, request.register)
    return ConfirmOutcome(directory, store.tracking_uri, parent_run_id, request.experiment,
                          record["selection"]["describe"], search_request.metric, _chosen(record), record["seeds"],
                          record["folds"], len(results), ended[COMPLETED], ended[ERRORED], ended[DIVERGED],
                          ended[STOPPED_EARLY], model_uri, registered)


def summary_lines(outcome: ConfirmOutcome) -> list[str]:
    """The stage's summary for the terminal: what was chosen on validation, what ran, where it went."""
    folds = f" × {outcome.folds} folds" if outcome.folds else ""
    lines = [f"medtune: confirmation of {outcome.search!r} by {outcome.selection} (on validation "
             f"{outcome.metric}): {len(outcome.chosen)} configurations × {len(outcome.seeds)} seeds{folds}, "
             f"seeds {outcome.seeds[0]}..{outcome.seeds[-1]}, full epochs, no early stopping."]
    for candidate in outcome.chosen:
        score = "not run in the search" if candidate.val_score is None else \
            f"val {candidate.val_score:.4f} over {candidate.trials} search trials"
        levels = " ".join(f"{k}={v}" for k, v in candidate.levels.items()) or trial_run_name(candidate.config)
        lines.append(f"  {candidate.config_id}  {score}  {levels}")
    lines += [f"{outcome.runs} runs: {outcome.completed} completed, {outcome.errored} errored, {outcome.diverged} "
              f"diverged" + (f", {outcome.unfinished} unfinished (interrupted: continue with --resume)"
                             if outcome.unfinished else ""),
              f"Tune results:  {outcome.experiment_dir}",
              f"MLflow runs:   {redact(outcome.tracking_uri)}  (children of the search's parent run "
              f"{outcome.parent_run_id}, tagged medtune.stage={CONFIRM})"]
    if outcome.model_uri:
        lines.append(f"confirmed model: {outcome.model_uri}" + (f"  (registered: {outcome.registered})"
                                                                if outcome.registered else ""))
    return lines


def _record(request: ConfirmRequest, search: dict[str, Any], chosen: list[Candidate], seeds: list[int],
            search_dir: str) -> dict[str, Any]:
    """The stage's ``SEARCH_FILE``: what --resume, sync and the analysis read."""
    selection = request.selection
    return {"stage": CONFIRM, "parent_run_id": search["parent_run_id"], "experiment": search["experiment"],
            "search": request.experiment, "search_dir": search_dir, "trial_params": search["trial_params"],
            "dataset_input": search.get("dataset_input"),
            "request": search["request"],
            "selection": {**asdict(selection), "describe": selection.describe(),
                          "on": "validation: mean best_score of each configuration's search trials"},
            "seeds": seeds, "folds": request.folds, "runs": len(chosen) * len(seeds) * (request.folds or 1),
            # run_config_id: the medtune.config_id tag of its runs; it differs from config_id (the search's)
            # where the runs change a defining key: folds, or a patience the search used
            "configurations": [{**asdict(c), "run_config_id": trial_config_id(
                replicate_configs([c], seeds[:1], request.folds)[0])} for c in chosen]}


def _check_unchanged(request: ConfirmRequest, record: dict[str, Any]) -> None:
    saved = record["selection"]
    if request.selection is not None and (request.selection.rule, request.selection.k,
                                          list(request.selection.factors)) != (saved["rule"], saved["k"],
                                                                               list(saved["factors"])):
        raise ConfigError(f"--resume: this confirmation stage chose by {saved['describe']}, not "
                          f"{request.selection.describe()}. Resume it as it was, or start another one.")
    if request.seeds is not None and request.seeds != len(record["seeds"]):
        raise ConfigError(f"--resume: this confirmation stage runs --seeds {len(record['seeds'])}, not "
                          f"--seeds {request.seeds}. Resume it as it was, or start another one.")
    if request.folds is not None and request.folds != record["folds"]:
        raise ConfigError(f"--resume: this confirmation stage runs --folds {record['folds']}, not --folds "
                          f"{request.folds}. Resume it as it was, or start another one.")


def _chosen(record: dict[str, Any]) -> list[Candidate]:
    return [Candidate(c["config_id"], c["config"], c["val_score"], c["trials"], c["levels"])
            for c in record["configurations"]]


def _ended(result: Any) -> str:
    """How one run ended. No scheduler or patience stops a run here, so one short of its epochs (or not
    started) was interrupted, not judged: ``STOPPED_EARLY`` counts as unfinished."""
    if result.error is not None:
        return ERRORED
    if result.config is None or "epoch" not in (result.metrics or {}):
        return STOPPED_EARLY
    return trial_outcome(result.config, result.metrics)


def _trial_name(trial: Any) -> str:
    """``<trial id>-<readable config>``, for Tune's table and trial folders."""
    return f"{trial.trial_id}-{trial_run_name(trial.config)}"


__all__ = ["FIRST_SEED", "ConfirmOutcome", "ConfirmRequest", "Selection", "check_request", "confirm_dir", "fresh_seeds",
           "replicate_configs", "run_confirm", "summary_lines"]
