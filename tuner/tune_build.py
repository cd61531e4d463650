"""Building Ray Tune's ``Tuner``: the pieces ``medtune tune`` and ``medtune pretrain --search`` share
(the trainable with its data and resources, ASHA, the run and failure settings), and ``medtune tune``'s
searchers (Optuna TPE or random over a space's define-by-run, or a preset grid).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from search_spaces import OptunaSpace, get_space
from tuner.config import TRIAL_DEFAULTS
from tuner.search_request import SearchRequest, effective_pins, fixed_pins
from tuner.tracking import trial_run_name


def with_data(function: Callable[..., None], data: Any, cpus: float, gpus: float) -> Any:
    """``function(config, data=data)`` as a Tune trainable asking for ``cpus`` and ``gpus``: the data
    go into Ray's object store once, not into every trial's pickled config."""
    return tune.with_resources(tune.with_parameters(function, data=data), {"cpu": cpus, "gpu": gpus})


def asha(max_epochs: int, grace_period: int, reduction_factor: int) -> Any:
    """ASHA over epochs (one Tune report per epoch); the grace period never exceeds the epochs."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                         grace_period=min(grace_period, max_epochs), reduction_factor=reduction_factor)


def make_tuner(trainable: Any, *, name: str, storage: Path, metric: str, mode: str, scheduler: Any,
               search_alg: Any, num_samples: int, trial_name: Callable[[Any], str], callbacks: list[Any],
               param_space: dict[str, Any] | None = None, max_failures: int = 0) -> tune.Tuner:
    """A Tuner with medtune's run settings: results in ``storage/name``, trials named by
    ``trial_name`` (table and folders), one checkpoint kept per trial, and ``max_failures`` retries."""
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=num_samples, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name,
                                    # A new trial reuses a finished trial's worker process: no second
                                    # torch import and model-code load (halves a small search's time).
                                    # MEDTUNE_REUSE_ACTORS=0 keeps each trial on the node Ray placed it.
                                    reuse_actors=os.environ.get("MEDTUNE_REUSE_ACTORS", "1") != "0"),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=1),
    )


def search_tuner(request: SearchRequest, configs: list[dict[str, Any]], trainable: Any, storage: Path, name: str,
                 logger: tune.Callback) -> tune.Tuner:
    """The Tuner of a new ``medtune tune`` search: ASHA on ``request.metric`` (maximised) up to the
    grid's largest ``epochs``, and the requested searcher."""
    searcher, num_samples = _searcher(request, configs)
    # Tune accepts preset points only for keys its param_space names; the grid's points are full configs.
    param_space = {key: None for key in TRIAL_DEFAULTS} if request.search == "grid" else None
    return make_tuner(trainable, name=name, storage=storage, metric=request.metric, mode="max",
                      scheduler=asha(max(c["epochs"] for c in configs), request.grace_period,
                                     request.reduction_factor),
                      search_alg=searcher, num_samples=num_samples, trial_name=_trial_name, callbacks=[logger],
                      param_space=param_space, max_failures=request.max_failures)


def _searcher(request: SearchRequest, configs: list[dict[str, Any]]) -> tuple[Any, int]:
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
