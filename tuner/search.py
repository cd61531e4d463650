"""A search: check everything, load the data once, then let Ray Tune run the trials.

Every check that can fail runs here, on the driver, before Ray starts: the space, every
configuration it can produce, the weight files they need, the data set, and the tracking store.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from search_spaces import OptunaSpace, enumerate_space, get_space
from tuner.config import TRIAL_DEFAULTS, make_trial_config, unknown_key_error
from tuner.data import DatasetSplits, load_dataset
from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.models.weights import weights_file
from tuner.tracking import (
    MlflowTrialLogger,
    default_tracking_uri,
    open_experiment,
    redact,
    start_parent_run,
    sync_experiment,
    trial_outcome,
    trial_run_name,
)

SearchAlgorithm = Literal["optuna", "random", "grid"]
SEARCH_FILE = "medtune_search.json"  # in the Tune experiment folder: what --resume needs


@dataclass
class SearchRequest:
    space: str
    dataset: str
    data_root: str | None = None
    num_samples: int | None = None
    max_epochs: int | None = None
    search: SearchAlgorithm = "optuna"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    pins: dict[str, Any] = field(default_factory=dict)
    storage: str = "results"
    experiment: str | None = None
    tracking_uri: str | None = None
    resume: bool = False
    seed: int = 0
    grace_period: int = 1
    reduction_factor: int = 2
    max_failures: int = 2
    metric: str = "val_auc"


@dataclass
class SearchOutcome:
    experiment: str
    experiment_dir: Path
    tracking_uri: str
    parent_run_id: str
    trials: int
    completed: int
    stopped_early: int  # by ASHA or by the trial's own early stopping (patience)
    errored: int
    best: dict[str, Any] | None


def prepare(request: SearchRequest) -> tuple[Any, list[dict[str, Any]]]:
    """The space module and every configuration its grid can produce, all checked."""
    if request.search not in ("optuna", "random", "grid"):
        raise ConfigError(f"unknown search algorithm {request.search!r}; use optuna, random or grid.")
    if request.cpus_per_trial <= 0 or request.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0.")
    space = get_space(request.space)
    for key in request.pins:
        if key not in TRIAL_DEFAULTS:
            raise unknown_key_error(key, list(TRIAL_DEFAULTS), f"--set (space {request.space!r})")
    pins = effective_pins(request)
    configs = [make_trial_config({**config, **fixed_pins(pins)}) for config in enumerate_space(space.define, pins)]
    for backbone, weights in sorted({(c["backbone"], c["weights"]) for c in configs}):
        weights_file(get_backbone(backbone), weights)
    if request.search == "grid" and request.num_samples is not None:
        raise ConfigError(f"a grid search runs each of its {len(configs)} grid points once; drop --num-samples "
                          "(or use --search optuna / random to sample a number of trials).")
    return space, configs


def effective_pins(request: SearchRequest) -> dict[str, Any]:
    """``--set`` values plus those implied by other options (``--max-epochs``, ``--metric``)."""
    pins = dict(request.pins)
    if request.max_epochs is not None:
        pins["epochs"] = request.max_epochs
    pins["metric"] = request.metric
    return pins


def fixed_pins(pins: dict[str, Any]) -> dict[str, Any]:
    """Pins that fix a value; a list pin only narrows a choice, and the space's answer stands."""
    return {k: v for k, v in pins.items() if not isinstance(v, list)}


def run_search(request: SearchRequest) -> SearchOutcome:
    from ray import tune

    space, configs = prepare(request)
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
    data = load_dataset(request.dataset, request.data_root)
    tracking_uri = request.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(storage)
    _limit_mlflow_retries()
    storage.mkdir(parents=True, exist_ok=True)
    client, experiment_id = open_experiment(tracking_uri, name, _artifact_root(tracking_uri, storage))
    _init_ray(request)

    trainable = tune.with_resources(tune.with_parameters(_tune_trial, data=data),
                                    {"cpu": request.cpus_per_trial, "gpu": request.gpus_per_trial})
    if request.resume:
        saved = json.loads(search_file.read_text())
        parent_run_id = saved["parent_run_id"]
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_errored=True)
    else:
        record = {**asdict(request), "tracking_uri": redact(tracking_uri)}
        parent_run_id = start_parent_run(client, experiment_id, name, {
            **{k: v for k, v in record.items() if k not in ("pins", "resume")},
            "pins": request.pins, "dataset": data.name, "task": data.task,
            "grid_size": len(configs)}, Path(space.__file__))
        tuner = _new_tuner(request, configs, trainable, storage, name,
                           MlflowTrialLogger(tracking_uri, experiment_id, parent_run_id, {"dataset": data.name}))
        experiment_dir.mkdir(parents=True, exist_ok=True)
        search_file.write_text(json.dumps({"parent_run_id": parent_run_id, "experiment": name,
                                           "trial_params": {"dataset": data.name}, "request": record}, indent=2))
    print(f"medtune: search {name!r}: Tune results in {experiment_dir}; MLflow {redact(tracking_uri)} "
          f"(parent run {parent_run_id})", flush=True)
    results = tuner.fit()
    outcome = _summarise(results, name, experiment_dir, tracking_uri, parent_run_id)
    try:
        client.set_terminated(parent_run_id, status="FINISHED" if outcome.errored < outcome.trials else "FAILED")
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
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(experiment_dir.parent)
    _limit_mlflow_retries()
    return sync_experiment(experiment_dir, uri, saved["experiment"], saved["parent_run_id"], saved["trial_params"])


def _limit_mlflow_retries() -> None:
    """MLflow's HTTP client retries a dead server for minutes per call by default; the search's
    driver must not stall that long (the logger retries on its own schedule instead)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


def _tune_trial(config: dict[str, Any], data: DatasetSplits) -> None:
    """The Tune function trainable: one trial reporting to Tune."""
    from tuner.training.session import TuneSession
    from tuner.training.trial import run_trial

    session = TuneSession()
    try:
        run_trial(config, data, session)
    except FloatingPointError as error:
        session.report_divergence(str(error))


def _artifact_root(tracking_uri: str, storage: Path) -> Path | None:
    """A local store keeps artifacts beside it; a server decides for itself."""
    return storage / "mlartifacts" if tracking_uri.startswith(("sqlite:", "file:", "/")) else None


def _init_ray(request: SearchRequest) -> None:
    """Join the cluster named by $RAY_ADDRESS, else start Ray on this machine; then check that some
    node can hold one trial."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            _check_ray_address(address)
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=True,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address!r} ({error}). "
                              "Start it, fix RAY_ADDRESS, or unset it to run locally.") from error
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= request.cpus_per_trial and n.get("GPU", 0) >= request.gpus_per_trial
               for n in nodes):
        biggest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
        raise ConfigError(f"no node can run a trial asking for {request.cpus_per_trial} CPU and "
                          f"{request.gpus_per_trial} GPU; the largest node has {biggest[0]:g} CPU and "
                          f"{biggest[1]:g} GPU. Lower --cpus-per-trial / --gpus-per-trial.")


def _check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address that does not answer fails in seconds; ray.init would retry for minutes."""
    import socket

    if address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"RAY_ADDRESS={address!r} does not answer ({error}). Start the cluster, fix RAY_ADDRESS "
                          "(host:port of the head's GCS, e.g. 10.0.0.5:6379), or unset it to run locally.") from error


def _new_tuner(request: SearchRequest, configs: list[dict[str, Any]], trainable: Any,
               storage: Path, name: str, logger: MlflowTrialLogger):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    max_epochs = max(c["epochs"] for c in configs)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                              grace_period=min(request.grace_period, max_epochs),
                              reduction_factor=request.reduction_factor)
    searcher, num_samples = _searcher(request, configs)
    # Tune accepts preset points only for keys its param_space names; the grid's points are full configs.
    param_space = {key: None for key in TRIAL_DEFAULTS} if request.search == "grid" else None
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=request.metric, mode="max", scheduler=scheduler, search_alg=searcher,
                                    num_samples=num_samples, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name,
                                    # A new trial reuses a finished trial's worker process: no second
                                    # torch import and model-code load (halves a small search's time).
                                    # MEDTUNE_REUSE_ACTORS=0 keeps each trial on the node Ray placed it.
                                    reuse_actors=os.environ.get("MEDTUNE_REUSE_ACTORS", "1") != "0"),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), callbacks=[logger],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=request.max_failures),
            verbose=1),
    )


def _searcher(request: SearchRequest, configs: list[dict[str, Any]]):
    from ray.tune.search import BasicVariantGenerator

    if request.search == "grid":
        return BasicVariantGenerator(points_to_evaluate=configs), len(configs)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = (optuna.samplers.TPESampler(seed=request.seed) if request.search == "optuna"
               else optuna.samplers.RandomSampler(seed=request.seed))
    searcher = OptunaSearch(space=_OptunaDefine(request.space, effective_pins(request)), metric=request.metric,
                            mode="max", sampler=sampler)
    return searcher, request.num_samples or 8


def _trial_name(trial: Any) -> str:
    """``<trial id>-<readable config>``, for Tune's table and trial folders."""
    return f"{trial.trial_id}-{trial_run_name(trial.config)}"


class _OptunaDefine:
    """The space's ``define`` as Optuna define-by-run; a class, because Tune pickles the searcher
    (with this) into every experiment checkpoint so that --resume can continue the study."""

    def __init__(self, space_name: str, pins: dict[str, Any]) -> None:
        self.space_name = space_name
        self.pins = pins

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {**(get_space(self.space_name).define(OptunaSpace(trial, self.pins)) or {}), **fixed_pins(self.pins)}


def _summarise(results: Any, name: str, experiment_dir: Path, tracking_uri: str,
               parent_run_id: str) -> SearchOutcome:
    completed = stopped = errored = 0
    for result in results:
        if result.error is not None:
            errored += 1
        elif trial_outcome(result.config, result.metrics or {}) == "completed":
            completed += 1
        else:
            stopped += 1
    best = None
    if errored < len(results):
        top = results.get_best_result(metric="best_score", mode="max", scope="last")
        best = {"config": top.config, **{k: top.metrics.get(k) for k in ("best_score", "best_val_auc", "test_auc",
                                                                          "test_acc")}}
    return SearchOutcome(name, experiment_dir, tracking_uri, parent_run_id, len(results), completed, stopped,
                         errored, best)


def pins_from_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "head=conv"]`` to typed values (Python literals where they parse)."""
    import ast

    pins: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is not key=value.")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False}.get(raw.lower(), raw)  # "none" stays a word (weights=none)
        pins[key.strip()] = value
    return pins


def describe(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())
