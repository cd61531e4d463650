"""``medtune pretrain``: one VAE pretraining run in this process, logged to MLflow (``--search`` hands
over to ``tuner.pretrain.search``).

Per epoch (step = epoch) the run logs ``beta``, ``train_recon``, ``train_kl``, ``train_loss`` (the
objective, recon + beta_e * kl), ``train_elbo`` and ``val_recon``, ``val_kl``, ``val_loss``,
``val_elbo`` (recon + kl, the negative ELBO), ``best_val_elbo``, ``best_epoch``. The best epoch's
encoder is logged as ``encoder/encoder.pt`` and ``encoder/encoder.json``, with ``reconstructions.png``,
and written to ``--out`` (default ``<storage>/<experiment>/``).
"""

from __future__ import annotations

import time
from typing import Any

from tuner.data import load_dataset
from tuner.pretrain.config import make_pretrain_config
from tuner.pretrain.encoder import ENCODER_FILE
from tuner.pretrain.request import (
    PretrainOutcome,
    PretrainRequest,
    experiment_name,
    log_encoder,
    open_pretrain_store,
    output_folder,
)
from tuner.pretrain.search import run_pretrain_search
from tuner.pretrain.train import train_vae
from tuner.terminal import say
from tuner.tracking import redact, start_run


def run_pretrain(request: PretrainRequest) -> PretrainOutcome:
    """Check everything, then pretrain in this process (or, with ``request.search``, run the Tune
    search); the one door of ``medtune pretrain``."""
    if request.search:
        return run_pretrain_search(request)
    from mlflow.entities import Metric

    started = time.time()
    config = make_pretrain_config(request.config)
    name = experiment_name(request, config)
    out = output_folder(request, name)
    data = load_dataset(request.dataset, request.data_root)
    store = open_pretrain_store(request, name)
    client = store.client
    params = {**config, "dataset": data.name, "n_train_images": len(data.train), "n_val_images": len(data.val)}
    run_id = start_run(client, store.experiment_id, f"vae-{config['backbone']}-z{config['latent_dim']}", params,
                       role="pretrain")
    say(f"medtune: pretraining a VAE ({config['backbone']} encoder, latent {config['latent_dim']}) on "
        f"{data.name}: {len(data.train)} training images, {len(data.val)} validation images; MLflow "
        f"{redact(store.tracking_uri)} (run {run_id})")

    def on_epoch(metrics: dict[str, float], snapshot: Any) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(metrics["epoch"])) for k, v in metrics.items()])
        say("medtune: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if snapshot is not None:
            snapshot.write(out)

    try:
        history = train_vae(config, data, on_epoch)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    best = min(history, key=lambda m: m["val_elbo"])
    log_encoder(client, run_id, out)
    client.set_tag(run_id, "medtune.best_epoch", str(best["epoch"]))
    client.set_terminated(run_id, status="FINISHED")
    return PretrainOutcome(name, store.tracking_uri, run_id, out / ENCODER_FILE, best, history, config,
                           seconds=time.time() - started)
