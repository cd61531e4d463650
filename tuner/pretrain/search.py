"""``medtune pretrain --search``: a Ray Tune search over the VAE's ``latent_dim``, ``beta`` and ``lr``
(random sampling; ASHA stops trials whose validation ELBO falls behind), chosen by the best
validation ELBO (``recon + kl``, mode min: the negative ELBO does not favour a small beta the way the
beta-weighted objective would).

MLflow: a parent run for the search and a nested child run per trial with its per-epoch curves and
reconstructions; the best trial's encoder goes to the parent run (``encoder/``) and to ``--out``, so
``weights=ssl:<parent run id>`` names the search's winner.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from tuner.errors import ConfigError
from tuner.pretrain.config import make_pretrain_config
from tuner.pretrain.encoder import ENCODER_FILE, META_FILE
from tuner.pretrain.run import (
    ROLE_TAG,
    PretrainOutcome,
    PretrainRequest,
    experiment_name,
    log_encoder,
    open_store,
    output_folder,
    storage_path,
)
from tuner.pretrain.train import EPOCH_METRICS, RECONSTRUCTIONS_FILE

LATENT_DIMS = (64, 128, 256)
BETA_RANGE = (0.25, 4.0)
LR_RANGE = (1e-4, 3e-3)
SEARCHED = ("latent_dim", "beta", "lr")
METRIC = "val_elbo"


def search_space(request: PretrainRequest) -> dict[str, Any]:
    """The base config (checked) with every searched key not given on the command line sampled."""
    base = make_pretrain_config(request.config)
    for latent_dim in LATENT_DIMS:
        make_pretrain_config({**request.config, "latent_dim": latent_dim})
    sampled = {"latent_dim": tune.choice(list(LATENT_DIMS)), "beta": tune.loguniform(*BETA_RANGE),
               "lr": tune.loguniform(*LR_RANGE)}
    return {**base, **{k: v for k, v in sampled.items() if k not in request.config}}


def run_pretrain_search(request: PretrainRequest) -> PretrainOutcome:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from tuner.data import load_dataset
    from tuner.tracking import git_commit

    started = time.time()
    if request.num_samples < 1 or request.cpus_per_trial <= 0 or request.gpus_per_trial < 0:
        raise ConfigError("--num-samples must be >= 1, --cpus-per-trial > 0 and --gpus-per-trial >= 0.")
    param_space = search_space(request)
    name = experiment_name(request, param_space)
    experiment_dir = storage_path(request) / name
    if experiment_dir.exists():
        raise ConfigError(f"{experiment_dir} already exists; choose another --experiment name.")
    out = output_folder(request, name)
    data = load_dataset(request.dataset, request.data_root)
    client, experiment_id, tracking_uri = open_store(request, name)
    _init_ray(request)

    from mlflow.entities import Param

    parent = client.create_run(experiment_id, run_name=name, tags={
        ROLE_TAG: "pretrain-search", "medtune.git_commit": git_commit()}).info.run_id
    params = {"dataset": data.name, "num_samples": request.num_samples, "searched": ",".join(
        k for k in SEARCHED if k not in request.config), **{k: v for k, v in param_space.items() if k not in SEARCHED
                                                            or k in request.config}}
    client.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()])
    epochs = param_space["epochs"]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_tune_pretrain, data=data),
                            {"cpu": request.cpus_per_trial, "gpu": request.gpus_per_trial}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="min", num_samples=request.num_samples, reuse_actors=True,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                                    grace_period=min(request.grace_period, epochs),
                                    reduction_factor=request.reduction_factor),
            search_alg=BasicVariantGenerator(random_state=request.search_seed),
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_path(request)),
                                  callbacks=[_PretrainLogger(tracking_uri, experiment_id, parent, data.name)],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1),
    )
    print(f"medtune: pretraining search {name!r}: {request.num_samples} trials; Tune results in {experiment_dir}; "
          f"MLflow {tracking_uri} (parent run {parent})", flush=True)
    results = tuner.fit()
    errored = sum(1 for r in results if r.error is not None)
    if errored == len(results):
        client.set_terminated(parent, status="FAILED")
        raise RuntimeError(f"every pretraining trial failed; see {experiment_dir}")
    best = results.get_best_result(metric="best_val_elbo", mode="min", scope="last", filter_nan_and_inf=True)
    out.mkdir(parents=True, exist_ok=True)
    with best.checkpoint.as_directory() as folder:
        for file in (ENCODER_FILE, META_FILE, RECONSTRUCTIONS_FILE):
            shutil.copy2(Path(folder) / file, out / file)
    log_encoder(client, parent, out)
    history = best.metrics_dataframe[list(EPOCH_METRICS)].to_dict("records")
    best_epoch = min(history, key=lambda m: m["val_elbo"])
    chosen = {k: best.config[k] for k in param_space}
    client.log_batch(parent, params=[Param(f"best_{k}", str(chosen[k])) for k in SEARCHED])
    client.set_tag(parent, "medtune.best_trial", best.path)
    client.set_terminated(parent, status="FINISHED")
    return PretrainOutcome(name, tracking_uri, parent, out / ENCODER_FILE, best_epoch, history, chosen,
                           trials=len(results), errored=errored, seconds=time.time() - started)


def _tune_pretrain(config: dict[str, Any], data: Any) -> None:
    """The Tune function trainable: one pretraining run, a checkpoint whenever validation ELBO improves."""
    from tuner.pretrain.train import train_vae

    def on_epoch(metrics: dict[str, float], snapshot: Any) -> None:
        if snapshot is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="medtune-vae-") as folder:
            snapshot.write(Path(folder))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train_vae(make_pretrain_config({k: v for k, v in config.items()}), data, on_epoch)


def _trial_name(trial: Any) -> str:
    c = trial.config
    return f"{trial.trial_id}-vae-z{c.get('latent_dim')}-b{c.get('beta', 0):.2g}-lr{c.get('lr', 0):.0e}"


def _init_ray(request: PretrainRequest) -> None:
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        try:
            ray.init(address=address or None, include_dashboard=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address!r} ({error}). Start it, "
                              "fix RAY_ADDRESS, or unset it to run locally.") from error


class _PretrainLogger(tune.Callback):
    """A nested MLflow run per trial: its sampled config, per-epoch metrics (step = epoch) and, at
    its end, the best epoch's reconstructions."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, dataset: str) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.dataset = dataset
        self._runs: dict[str, str] = {}
        self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_runs": {}}

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _run(self, trial: Any) -> str:
        if trial.trial_id not in self._runs:
            from mlflow.entities import Param
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            run_id = self.client.create_run(self.experiment_id, run_name=_trial_name(trial), tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, ROLE_TAG: "pretrain",
                "medtune.trial_id": trial.trial_id}).info.run_id
            params = {**trial.config, "dataset": self.dataset}
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self._runs[trial.trial_id] = run_id
        return self._runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(result["epoch"])
        metrics = [Metric(k, float(result[k]), now, step) for k in EPOCH_METRICS
                   if isinstance(result.get(k), int | float) and math.isfinite(result[k])]
        self.client.log_batch(self._run(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        done = (trial.last_result or {}).get("epoch", 0) >= trial.config.get("epochs", 0)
        self.client.set_tag(run_id, "medtune.outcome", "completed" if done else "stopped_early")
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as folder:
                image = Path(folder) / RECONSTRUCTIONS_FILE
                if image.is_file():
                    self.client.log_artifact(run_id, str(image))
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        self.client.set_tag(run_id, "medtune.outcome", "errored")
        self.client.set_terminated(run_id, status="FAILED")
