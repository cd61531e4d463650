"""What a search is asked to do (``SearchRequest``) and the checks run on it before Ray starts.

Every check that can fail runs here, on the driver: the options, the space, every configuration it
can produce, and the weight files they need, so a mistake costs seconds, not a queue of failing trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from search_spaces import enumerate_space, get_space
from tuner.config import TRIAL_DEFAULTS, make_trial_config, unknown_key_error
from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.schema import REPLICATE_KEYS
from tuner.weight_sources import weights_file

SearchAlgorithm = Literal["optuna", "random", "grid"]


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
    metric: str = "val_auc"
    patient_regex: str | None = None  # image folders: the patient ID in a file name (grouped splits)


def prepare(request: SearchRequest) -> tuple[ModuleType, list[dict[str, Any]]]:
    """The space module and every configuration its grid can produce, all checked, with the weight
    files they need in place (downloaded once here, on the driver, if they can be)."""
    if request.search not in ("optuna", "random", "grid"):
        raise ConfigError(f"unknown search algorithm {request.search!r}; use optuna, random or grid.")
    if request.cpus_per_trial <= 0 or request.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0.")
    space = get_space(request.space)
    for key in request.pins:
        if key not in TRIAL_DEFAULTS:
            raise unknown_key_error(key, list(TRIAL_DEFAULTS), f"--set (space {request.space!r})")
        if key in REPLICATE_KEYS and isinstance(request.pins[key], list):
            raise ConfigError(f"--set {key}={request.pins[key]}: a search does not choose {key}s, they are replicates. "
                              f"Pin one (--set {key}=0), and replicate the chosen configurations with the "
                              "confirmation stage (medtune confirm --seeds N).")
    pins = effective_pins(request)
    configs = [make_trial_config({**config, **fixed_pins(pins)}) for config in enumerate_space(space.define, pins)]
    for backbone, weights in sorted({(c["backbone"], c["weights"]) for c in configs}):
        weights_file(get_backbone(backbone), weights)
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


def fixed_pins(pins: dict[str, Any]) -> dict[str, Any]:
    """Pins that fix a value; a list pin only narrows a choice, and the space's answer stands."""
    return {k: v for k, v in pins.items() if not isinstance(v, list)}
