"""``medtune pretrain``: one VAE pretraining run in this process, logged to MLflow, or (``--search``)
a Ray Tune search over latent_dim, beta and lr that keeps the encoder with the best validation ELBO.

Per epoch (step = epoch) the run logs ``beta``, ``train_recon``, ``train_kl``, ``train_loss`` (the
objective, recon + beta_e * kl), ``train_elbo`` and ``val_recon``, ``val_kl``, ``val_loss``,
``val_elbo`` (recon + kl, the negative ELBO), ``best_val_elbo``, ``best_epoch``. The best epoch's
encoder is logged as ``encoder/encoder.pt`` and ``encoder/encoder.json``, with ``reconstructions.png``,
and written to ``--out`` (default ``<storage>/<experiment>/``).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.pretrain.config import PRETRAIN_DEFAULTS, make_pretrain_config
from tuner.pretrain.encoder import ARTIFACT_DIR, ENCODER_FILE, META_FILE

ROLE_TAG = "medtune.role"


@dataclass
class PretrainRequest:
    dataset: str
    config: dict[str, Any] = field(default_factory=dict)  # pretraining parameters given (the rest default)
    data_root: str | None = None
    storage: str = "results"
    experiment: str | None = None
    tracking_uri: str | None = None
    out: str | None = None
    # --search: Ray Tune over latent_dim, beta, lr (those in ``config`` stay pinned)
    search: bool = False
    num_samples: int = 8
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    grace_period: int = 1
    reduction_factor: int = 2
    search_seed: int = 0


@dataclass
class PretrainOutcome:
    experiment: str
    tracking_uri: str
    run_id: str  # the run whose artifacts hold the encoder (a search's parent run)
    encoder_path: Path
    best: dict[str, Any]  # the best epoch's metrics (of the best trial, for a search)
    history: list[dict[str, float]]  # per-epoch metrics (of the best trial)
    config: dict[str, Any]
    trials: int = 1
    errored: int = 0
    seconds: float = 0.0


def experiment_name(request: PretrainRequest, config: dict[str, Any]) -> str:
    return request.experiment or (f"pretrain-{config['backbone']}-{Path(request.dataset).stem}-"
                                  f"{time.strftime('%Y%m%d-%H%M%S')}")


def storage_path(request: PretrainRequest) -> Path:
    return Path(request.storage).expanduser().resolve()


def open_store(request: PretrainRequest, name: str) -> tuple[Any, str, str]:
    """(client, experiment id, tracking URI) as ``medtune tune`` chooses them."""
    from tuner.tracking import default_tracking_uri, open_experiment

    storage = storage_path(request)
    tracking_uri = request.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(storage)
    storage.mkdir(parents=True, exist_ok=True)
    local = tracking_uri.startswith(("sqlite:", "file:", "/"))
    client, experiment_id = open_experiment(tracking_uri, name, storage / "mlartifacts" if local else None)
    return client, experiment_id, tracking_uri


def output_folder(request: PretrainRequest, name: str) -> Path:
    out = Path(request.out).expanduser().resolve() if request.out else storage_path(request) / name
    if (out / ENCODER_FILE).exists():
        raise ConfigError(f"{out / ENCODER_FILE} already exists; choose another --out or --experiment (an encoder "
                          "is never overwritten).")
    return out


def log_encoder(client: Any, run_id: str, folder: Path) -> None:
    client.log_artifact(run_id, str(folder / ENCODER_FILE), artifact_path=ARTIFACT_DIR)
    client.log_artifact(run_id, str(folder / META_FILE), artifact_path=ARTIFACT_DIR)
    client.log_artifact(run_id, str(folder / "reconstructions.png"))


def run_pretrain(request: PretrainRequest) -> PretrainOutcome:
    """Check everything, then pretrain in this process (or hand over to the Tune search)."""
    if request.search:
        from tuner.pretrain.search import run_pretrain_search

        return run_pretrain_search(request)
    from mlflow.entities import Metric, Param

    from tuner import __version__
    from tuner.data import load_dataset
    from tuner.pretrain.train import train_vae
    from tuner.tracking import git_commit

    started = time.time()
    config = make_pretrain_config(request.config)
    name = experiment_name(request, config)
    out = output_folder(request, name)
    data = load_dataset(request.dataset, request.data_root)
    client, experiment_id, tracking_uri = open_store(request, name)
    run_id = client.create_run(experiment_id, run_name=f"vae-{config['backbone']}-z{config['latent_dim']}", tags={
        ROLE_TAG: "pretrain", "medtune.version": __version__, "medtune.git_commit": git_commit()}).info.run_id
    params = {**config, "dataset": data.name, "n_train_images": len(data.train), "n_val_images": len(data.val)}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    print(f"medtune: pretraining a VAE ({config['backbone']} encoder, latent {config['latent_dim']}) on "
          f"{data.name}: {len(data.train)} training images, {len(data.val)} validation images; MLflow "
          f"{tracking_uri} (run {run_id})", flush=True)

    def on_epoch(metrics: dict[str, float], snapshot: Any) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(metrics["epoch"])) for k, v in metrics.items()])
        print("medtune: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
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
    return PretrainOutcome(name, tracking_uri, run_id, out / ENCODER_FILE, best, history, config,
                           seconds=time.time() - started)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = PRETRAIN_DEFAULTS
    p.add_argument("--dataset", required=True, help="MedMNIST name (breastmnist), image folder, or .npz; only "
                                                     "its training images are used (never labels)")
    p.add_argument("--data-root", help="folder of MedMNIST .npz files (default $MEDTUNE_DATA_ROOT, ~/.medmnist)")
    p.add_argument("--backbone", help=f"registry backbone whose trunk is the encoder ({d['backbone']})")
    p.add_argument("--latent-dim", type=int, help=f"latent dimensions ({d['latent_dim']})")
    p.add_argument("--beta", type=float, help=f"KL weight after warm-up ({d['beta']})")
    p.add_argument("--kl-warmup-epochs", type=int,
                   help=f"linear KL warm-up: beta_e = beta * min(1, e / W), epochs from 1; 0: none "
                        f"({d['kl_warmup_epochs']})")
    p.add_argument("--epochs", type=int, help=f"({d['epochs']})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate, cosine schedule ({d['lr']})")
    p.add_argument("--weight-decay", type=float, help=f"({d['weight_decay']})")
    p.add_argument("--batch-size", type=int, help=f"({d['batch_size']})")
    p.add_argument("--image-size", type=int,
                   help=f"b * 2**k with b in 4..7 (28, 32, 64, 128, 224, ...) ({d['image_size']})")
    p.add_argument("--decoder-width", type=int, help=f"channels of the decoder's first grid ({d['decoder_width']})")
    p.add_argument("--augment", action="store_true", default=None, help="rotation/shift/shear on training images")
    p.add_argument("--seed", type=int, help=f"({d['seed']})")
    p.add_argument("--storage", default="results", help="results folder (the MLflow store defaults to sqlite here)")
    p.add_argument("--experiment", help="MLflow experiment / results name (default pretrain-<backbone>-<data>-<time>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI, else sqlite in --storage)")
    p.add_argument("--out", help="folder for encoder.pt, encoder.json, reconstructions.png "
                                 "(default <storage>/<experiment>)")
    p.add_argument("--search", action="store_true",
                   help="Ray Tune search over latent_dim, beta, lr (those given above stay fixed), ASHA on val_elbo")
    p.add_argument("--num-samples", type=int, default=8, help="--search: trials (8)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, default=2)
    p.add_argument("--search-seed", type=int, default=0, help="--search: the random sampler's seed")


def request_from_args(args: argparse.Namespace) -> PretrainRequest:
    given = {key: getattr(args, key) for key in PRETRAIN_DEFAULTS if getattr(args, key, None) is not None}
    return PretrainRequest(
        dataset=args.dataset, config=given, data_root=args.data_root, storage=args.storage,
        experiment=args.experiment, tracking_uri=args.tracking_uri, out=args.out, search=args.search,
        num_samples=args.num_samples, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, search_seed=args.search_seed)


def pretrain_command(args: argparse.Namespace) -> int:
    outcome = run_pretrain(request_from_args(args))
    best = outcome.best
    first = outcome.history[0]["val_elbo"] if outcome.history else float("nan")
    if outcome.trials > 1:
        print(f"\nmedtune: {outcome.trials} pretraining trials, {outcome.errored} errored; best by validation ELBO: "
              f"latent_dim={outcome.config['latent_dim']} beta={outcome.config['beta']:.3g} "
              f"lr={outcome.config['lr']:.2e}")
    print(f"medtune: best epoch {best['epoch']}: val_elbo={best['val_elbo']:.2f} (recon {best['val_recon']:.2f}, "
          f"kl {best['val_kl']:.2f}); epoch 1: val_elbo={first:.2f}. {outcome.seconds:.0f} s")
    print(f"Encoder:      {outcome.encoder_path}  (+ {META_FILE}, reconstructions.png)")
    print(f"MLflow run:   {outcome.run_id} in {outcome.tracking_uri}  (experiment {outcome.experiment!r})")
    print(f"Use it:       --set weights=ssl:{outcome.encoder_path}   (backbone={outcome.config['backbone']})")
    print(f"         or   MLFLOW_TRACKING_URI={outcome.tracking_uri} ... --set weights=ssl:{outcome.run_id}")
    print(f"  or the study: MEDTUNE_SSL_ENCODER={outcome.encoder_path} medtune tune --space ssl_vs_imagenet "
          f"--dataset {args.dataset} --set backbone={outcome.config['backbone']} "
          f"--set image_size={outcome.config['image_size']}")
    return 0 if outcome.errored < outcome.trials else 1
