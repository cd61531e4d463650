"""``medtune pretrain --search``: a Ray Tune search over the VAE's ``latent_dim``, ``beta`` and ``lr``
(random sampling; ASHA stops trials whose validation ELBO falls behind), chosen by the best
validation ELBO (``recon + kl``, mode min: the negative ELBO does not favour a small beta the way the
beta-weighted objective would).

MLflow: a parent run for the search and a nested child run per trial with its per-epoch curves and
reconstructions, logged by the search's resilient trial logger; the best trial's encoder goes to the
parent run (``encoder/``) and to ``--out``, so ``weights=ssl:<parent run id>`` names the search's winner.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from ray import tune

from tuner.cluster import init_ray
from tuner.data import load_dataset
from tuner.errors import ConfigError
from tuner.options import check_options
from tuner.pretrain.config import PRETRAIN_SEARCH_OPTIONS, make_pretrain_config
from tuner.pretrain.encoder import ENCODER_FILE, META_FILE
from tuner.pretrain.request import (
    PretrainOutcome,
    PretrainRequest,
    experiment_name,
    log_encoder,
    open_pretrain_store,
    output_folder,
    storage_path,
)
from tuner.pretrain.train import EPOCH_METRICS, RECONSTRUCTIONS_FILE, train_vae
from tuner.terminal import say
from tuner.tracking import ROLE_TAG, MlflowTrialLogger, RunLayout, param_value, redact, start_run
from tuner.tune_build import asha, make_tuner, with_data
from tuner.tune_results import fit_results

LATENT_DIMS = (64, 128, 256)
BETA_RANGE = (0.25, 4.0)
LR_RANGE = (1e-4, 3e-3)
SEARCHED = ("latent_dim", "beta", "lr")
METRIC = "val_elbo"


def trial_name(trial: Any) -> str:
    """``<trial id>-vae-z<latent>-b<beta>-lr<lr>``: Tune's table, trial folders and child-run names."""
    c = trial.config
    return f"{trial.trial_id}-vae-z{c.get('latent_dim')}-b{c.get('beta', 0):.2g}-lr{c.get('lr', 0):.0e}"


# A pretraining trial's child run: its epoch metrics exactly, and its best epoch's reconstructions.
PRETRAIN_RUNS = RunLayout(run_name=trial_name, metric_keys=EPOCH_METRICS, metric_prefixes=(),
                          tags=((ROLE_TAG, "pretrain"),), final_artifact=RECONSTRUCTIONS_FILE,
                          final_artifact_tag="medtune.reconstructions",
                          offline_fix="the search's Tune folder still holds every trial's results")


def search_space(request: PretrainRequest) -> dict[str, Any]:
    """The base config (checked) with every searched key not given on the command line sampled."""
    base = make_pretrain_config(request.config)
    for latent_dim in LATENT_DIMS:
        make_pretrain_config({**request.config, "latent_dim": latent_dim})
    sampled = {"latent_dim": tune.choice(list(LATENT_DIMS)), "beta": tune.loguniform(*BETA_RANGE),
               "lr": tune.loguniform(*LR_RANGE)}
    return {**base, **{k: v for k, v in sampled.items() if k not in request.config}}


def run_pretrain_search(request: PretrainRequest) -> PretrainOutcome:
    """Check everything, run the search on Ray, and keep the best trial's encoder (by validation ELBO)."""
    from ray.tune.search import BasicVariantGenerator

    started = time.time()
    check_options(vars(request), PRETRAIN_SEARCH_OPTIONS)
    param_space = search_space(request)
    name = experiment_name(request, param_space)
    experiment_dir = storage_path(request) / name
    if experiment_dir.exists():
        raise ConfigError(f"{experiment_dir} already exists; choose another --experiment name.")
    out = output_folder(request, name)
    data = load_dataset(request.dataset, request.data_root)
    store = open_pretrain_store(request, name)
    init_ray(request.cpus_per_trial, request.gpus_per_trial)

    client = store.client
    params = {"dataset": data.name, "num_samples": request.num_samples, "searched": ",".join(
        k for k in SEARCHED if k not in request.config), **{k: v for k, v in param_space.items() if k not in SEARCHED
                                                            or k in request.config}}
    parent = start_run(client, store.experiment_id, name, params, role="pretrain-search")
    epochs = param_space["epochs"]
    logger = MlflowTrialLogger(store.tracking_uri, store.experiment_id, parent, {"dataset": data.name},
                               layout=PRETRAIN_RUNS)
    runner = make_tuner(with_data(_tune_pretrain, data, request.cpus_per_trial, request.gpus_per_trial),
                        name=name, storage=storage_path(request), metric=METRIC, mode="min",
                        scheduler=asha(epochs, request.grace_period, request.reduction_factor),
                        search_alg=BasicVariantGenerator(random_state=request.search_seed),
                        num_samples=request.num_samples, trial_name=trial_name, callbacks=[logger],
                        param_space=param_space)
    say(f"medtune: pretraining search {name!r}: {request.num_samples} trials; Tune results in {experiment_dir}; "
        f"MLflow {redact(store.tracking_uri)} (parent run {parent})")
    results = fit_results(runner, experiment_dir)
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
    client.log_batch(parent, params=[Param(f"best_{k}", param_value(chosen[k])) for k in SEARCHED])
    client.set_tag(parent, "medtune.best_trial", best.path)
    client.set_terminated(parent, status="FINISHED")
    return PretrainOutcome(name, store.tracking_uri, parent, out / ENCODER_FILE, best_epoch, history, chosen,
                           trials=len(results), errored=errored, seconds=time.time() - started)


def _tune_pretrain(config: dict[str, Any], data: Any) -> None:
    """The Tune function trainable: one pretraining run, a checkpoint whenever validation ELBO improves."""

    def on_epoch(metrics: dict[str, float], snapshot: Any) -> None:
        if snapshot is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="medtune-vae-") as folder:
            snapshot.write(Path(folder))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train_vae(make_pretrain_config({k: v for k, v in config.items()}), data, on_epoch)
