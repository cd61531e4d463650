"""What a search is asked to do (``SearchRequest``) and the checks run on it before Ray starts.

Every check that can fail runs here, on the driver: the options (declared as ``Param``s, the same
declarations ``medtune tune``'s parser is built from), the tracking URI's scheme, the space, every
configuration it can produce, and the weight files they need, each loaded once and fitted to its
trunk with the code a trial uses, so a mistake costs seconds, not a queue of failing trials.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from search_spaces import enumerate_space, get_space
from tuner.config import SEED_MAX, TRIAL_DEFAULTS, make_trial_config, trial_params, unknown_key_error
from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.models.registry import BackboneSpec
from tuner.options import (
    CPUS_PER_TRIAL,
    GPUS_PER_TRIAL,
    GRACE_PERIOD,
    NUM_SAMPLES,
    REDUCTION_FACTOR,
    check_options,
    check_tracking_uri,
    option,
)
from tuner.schema import REPLICATE_KEYS
from tuner.spec import Param
from tuner.training.checkpoint import CHECKPOINT_EVERY, CHECKPOINT_SECONDS
from tuner.weight_sources import load_trunk_weights, weights_file

SearchAlgorithm = Literal["optuna", "random", "grid"]

# `medtune tune`'s options, by SearchRequest field: the parser is built from them, ``prepare`` checks them.
TUNE_OPTIONS: tuple[Param, ...] = (
    option(NUM_SAMPLES, doc="trials to sample (optuna/random; unset: 8, or a multiple of the arms)"),
    option(trial_params()["epochs"], name="max_epochs", default=None, nullable=True,
            doc="epochs per trial (pins `epochs`; ASHA's max_t)"),
    Param("search", str, "optuna", "the searcher: Optuna TPE, random sampling, or the whole grid",
          choices=("optuna", "random", "grid")),
    CPUS_PER_TRIAL,
    GPUS_PER_TRIAL,
    Param("seed", int, 0, "the searcher's seed", low=0, high=SEED_MAX),
    option(trial_params()["metric"], doc="validation metric the search optimises and each trial selects its best "
            "epoch by"),
    GRACE_PERIOD,
    REDUCTION_FACTOR,
    Param("max_failures", int, 2, "retries of a trial whose worker died (-1: no limit)", low=-1),
    CHECKPOINT_EVERY,
    CHECKPOINT_SECONDS,
)
TUNE_OPTION: dict[str, Param] = {param.name: param for param in TUNE_OPTIONS}


@dataclass
class SearchRequest:
    """The options of ``medtune tune``, as a value: the CLI builds one, tests and benchmarks too."""

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
    checkpoint_every: int = CHECKPOINT_EVERY.default  # a trial's full state every k epochs (0: by time alone)
    checkpoint_seconds: float = CHECKPOINT_SECONDS.default  # ... and once this many seconds have passed
    metric: str = "val_auc"
    patient_regex: str | None = None  # image folders: the patient ID in a file name (grouped splits)
    register: str | None = None  # register the best trial's model under this name (`--register`)


def prepare(request: SearchRequest) -> tuple[ModuleType, list[dict[str, Any]]]:
    """The space module and every configuration its grid can produce, all checked, with the weight
    files they need in place (downloaded once here, on the driver, if they can be)."""
    check_options(vars(request), TUNE_OPTIONS)
    check_tracking_uri(request.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""))  # "": the default sqlite
    space = get_space(request.space)
    if "metric" in request.pins and request.pins["metric"] != request.metric:  # it would be overridden
        trial_params()["metric"].check(request.pins["metric"])
        raise ConfigError(f"--set metric={request.pins['metric']}: the metric a search optimises and its trials select "
                          f"their best epoch by is --metric ({request.metric}). Use --metric {request.pins['metric']}.")
    for key in request.pins:
        if key not in TRIAL_DEFAULTS:
            raise unknown_key_error(key, list(TRIAL_DEFAULTS), f"--set (space {request.space!r})")
        if key in REPLICATE_KEYS and isinstance(request.pins[key], list):
            raise ConfigError(f"--set {key}={request.pins[key]}: a search does not choose {key}s, they are replicates. "
                              f"Pin one (--set {key}=0), and replicate the chosen configurations with the "
                              "confirmation stage (medtune confirm --seeds N).")
    pins = effective_pins(request)
    configs = [make_trial_config(config) for config in enumerate_space(space.define, pins)]
    fit_all_weights(configs)
    if request.search == "grid" and request.num_samples is not None:
        raise ConfigError(f"a grid search runs each of its {len(configs)} grid points once; drop --num-samples "
                          "(or use --search optuna / random to sample a number of trials).")
    return space, configs


def effective_pins(request: SearchRequest) -> dict[str, Any]:
    """``--set`` values plus those implied by other options (``--max-epochs``, ``--metric``), and the
    one seed every configuration of the search runs with (``--set seed=N``, else the trial's default):
    a search explores configurations, it does not replicate them."""
    pins = {"seed": TRIAL_DEFAULTS["seed"], **request.pins}
    if request.max_epochs is not None:
        pins["epochs"] = request.max_epochs
    pins["metric"] = request.metric
    return pins


_fitted: set[tuple[str, str, str, int, float]] = set()


def fit_all_weights(configs: list[dict[str, Any]]) -> None:
    """``fit_weights`` for each (backbone, weights) pair the configurations use, once each."""
    for backbone, weights in sorted({(config["backbone"], config["weights"]) for config in configs}):
        fit_weights(get_backbone(backbone), weights)


def fit_weights(spec: BackboneSpec, weights: str) -> None:
    """Load the file a ``weights`` value names (downloading it once, if it can be) into a trunk of
    ``spec`` on the meta device, with the code a trial loads it with: a file that is not a state dict,
    is truncated, holds pickled code (never run: ``weights_only=True``) or does not fill the trunk is
    refused here, on the driver, with one line. A file already fitted unchanged is not read again."""
    path = weights_file(spec, weights)
    if path is None:
        return
    stat = Path(path).stat()
    key = (spec.name, weights, str(path), stat.st_size, stat.st_mtime)
    if key in _fitted:
        return
    with torch.device("meta"):
        trunk = spec.build(weights=None)
    trunk.set_submodule(spec.classifier_attr, nn.Identity())
    with warnings.catch_warnings():  # copying into a meta tensor is the point: shapes and keys, no memory
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        load_trunk_weights(trunk, spec, weights)
    _fitted.add(key)
