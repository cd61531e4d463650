"""Building Ray Tune's ``Tuner``: the pieces ``medtune tune`` and ``medtune pretrain --search`` share
(the trainable with its data and resources, ASHA, the run and failure settings), and ``medtune tune``'s
searchers (Optuna TPE or random over a space's define-by-run, one persisted study per arm cell, or a
preset grid).

``medtune tune``'s ASHA counts ``phase_epoch``, the epochs since a strategy's last phase change (0 while
a staged strategy such as ``lp_ft`` or ``g_lf`` is still in an earlier phase; the trial reports it), not
``training_iteration``: judged by its epoch, a staged strategy would be ranked, and cut, while it is
still a linear probe. Its rungs start once it has become itself; ``max_t`` still caps every trial.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from search_spaces import OptunaSpace, get_space
from tuner.arms import ArmPlan
from tuner.config import TRIAL_DEFAULTS
from tuner.optuna_study import ArmSearcher, StudySearch, study_name
from tuner.progress import progress_callbacks
from tuner.search_request import SearchRequest, effective_pins
from tuner.terminal import tune_verbosity
from tuner.tracking import trial_run_name
from tuner.training.checkpoint import CHECKPOINT_RANK


def with_data(function: Callable[..., None], data: Any, cpus: float, gpus: float, **parameters: Any) -> Any:
    """``function(config, data=data, **parameters)`` as a Tune trainable asking for ``cpus`` and ``gpus``:
    the data go into Ray's object store once, not into every trial's pickled config."""
    return tune.with_resources(tune.with_parameters(function, data=data, **parameters), {"cpu": cpus, "gpu": gpus})


def asha(max_epochs: int, grace_period: int, reduction_factor: int, time_attr: str = "training_iteration") -> Any:
    """ASHA over epochs (one Tune report per epoch), counted by ``time_attr`` (``phase_epoch`` for
    ``medtune tune``: see the module's docstring); ``max_epochs`` is its ``max_t``, so no trial runs
    past it, and the grace period never exceeds it."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=time_attr, max_t=max_epochs, grace_period=min(grace_period, max_epochs),
                         reduction_factor=reduction_factor)


def make_tuner(trainable: Any, *, name: str, storage: Path, metric: str, mode: str, scheduler: Any,
               search_alg: Any, num_samples: int, trial_name: Callable[[Any], str], callbacks: list[Any],
               param_space: dict[str, Any] | None = None, max_failures: int = 0,
               checkpoint_rank: str | None = None) -> tune.Tuner:
    """A Tuner with medtune's run settings: results in ``storage/name``, trials named by
    ``trial_name`` (table and folders), one checkpoint kept per trial (and its newest state one, ranked
    by ``checkpoint_rank``), ``max_failures`` retries, and
    the terminal's level (``tuner.terminal``): Tune's tables at --verbose, else medtune's progress."""
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
            name=name, storage_path=str(storage),
            callbacks=callbacks + progress_callbacks(metric, mode, num_samples, trial_name),
            # The newest checkpoint, and the newest state one beside it when the newest holds only scores
            # (a trial reports CHECKPOINT_RANK with each; see tuner.training.checkpoint).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=checkpoint_rank),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=tune_verbosity()),
    )


def search_tuner(request: SearchRequest, configs: list[dict[str, Any]], plan: ArmPlan, trainable: Any, storage: Path,
                 name: str, logger: tune.Callback, optuna_url: str) -> tune.Tuner:
    """The Tuner of a new ``medtune tune`` search: ASHA on ``request.metric`` (maximised) over phase
    epochs up to the grid's largest ``epochs``, and the requested searcher (sampled searches: one
    study per arm cell of ``plan``, in the RDB storage ``optuna_url``, named after ``name``)."""
    searcher, num_samples = _searcher(request, configs, plan, name, optuna_url)
    # Tune accepts preset points only for keys its param_space names; the grid's points are full configs.
    param_space = {key: None for key in TRIAL_DEFAULTS} if request.search == "grid" else None
    return make_tuner(trainable, name=name, storage=storage, metric=request.metric, mode="max",
                      scheduler=asha(max(c["epochs"] for c in configs), request.grace_period,
                                     request.reduction_factor, time_attr="phase_epoch"),
                      search_alg=searcher, num_samples=num_samples, trial_name=_trial_name, callbacks=[logger],
                      param_space=param_space, max_failures=request.max_failures, checkpoint_rank=CHECKPOINT_RANK)


def _searcher(request: SearchRequest, configs: list[dict[str, Any]], plan: ArmPlan, name: str,
              optuna_url: str) -> tuple[Any, int]:
    """The grid's preset points, or the arm cells' studies (``arm_searcher``) and their whole budget."""
    from ray.tune.search import BasicVariantGenerator

    if request.search == "grid" or plan.share is None:
        return BasicVariantGenerator(points_to_evaluate=configs), len(configs)
    return arm_searcher(request, plan, name, optuna_url), plan.budget


def arm_searcher(request: SearchRequest, plan: ArmPlan, name: str, optuna_url: str) -> ArmSearcher:
    """A sampled search's searcher: one Optuna study per arm cell of ``plan`` (the cell's values pinned,
    so it tunes only the other knobs; its own TPE or random sampler seeded by ``--seed``), named
    ``study_name(name, cell)`` in the RDB storage ``optuna_url``, each given ``plan.share`` trials."""
    import optuna

    if plan.share is None:
        raise ValueError("a grid search's plan has no share of trials per arm: it runs its grid points")
    storage = optuna.storages.RDBStorage(optuna_url)
    pins = effective_pins(request)
    studies = []
    for cell in plan.cells:
        sampler = (optuna.samplers.TPESampler(seed=request.seed) if request.search == "optuna"
                   else optuna.samplers.RandomSampler(seed=request.seed))
        studies.append(StudySearch(space=_OptunaDefine(request.space, {**pins, **plan.pins(cell)}),
                                   metric=request.metric, mode="max", sampler=sampler, storage=storage,
                                   study_name=study_name(name, plan.label(cell))))
    return ArmSearcher(studies, plan.share, request.metric, "max")


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
        """The trial's config: the space's constants, every value it asked (sampled, pinned or a
        ``constant`` such as ``epochs``) and the fixed pins; ``epochs`` always, which ASHA and the
        trial's outcome read."""
        space = OptunaSpace(trial, self.pins)
        return {"epochs": TRIAL_DEFAULTS["epochs"], **space.configuration(get_space(self.space_name).define(space))}
