"""``medtune pretrain``'s command line: its arguments, the request they make, and the summary printed
at the end (``tuner.cli`` mounts it as a subcommand).

Building the parser must stay cheap (every ``medtune`` command builds all subcommands), so the run's
modules, which bring MLflow and Ray, are imported only once ``medtune pretrain`` runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tuner.options import add_option
from tuner.pretrain.config import PRETRAIN_DEFAULTS, PRETRAIN_PARAMS, PRETRAIN_SEARCH_OPTIONS
from tuner.pretrain.encoder import META_FILE

if TYPE_CHECKING:
    from tuner.pretrain.request import PretrainRequest


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The pretraining parameters (their defaults in the help) and the run's and search's options, built
    from their declarations (``tuner.pretrain.config``), which also check them."""
    p.add_argument("--dataset", required=True, help="MedMNIST name (breastmnist), image folder, or .npz; only "
                                                     "its training images are used (never labels)")
    p.add_argument("--data-root", help="folder of MedMNIST .npz files (default $MEDTUNE_DATA_ROOT, ~/.medmnist)")
    for param in PRETRAIN_PARAMS:  # not given: the parameter's default (and a search samples the searched ones)
        add_option(p, param, default=None, help=f"{param.doc} ({param.default})")
    p.add_argument("--storage", default="results", help="results folder (the MLflow store defaults to sqlite here)")
    p.add_argument("--experiment", help="MLflow experiment / results name (default pretrain-<backbone>-<data>-<time>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI, else sqlite in --storage)")
    p.add_argument("--out", help="folder for encoder.pt, encoder.json, reconstructions.png "
                                 "(default <storage>/<experiment>)")
    p.add_argument("--search", action="store_true",
                   help="Ray Tune search over latent_dim, beta, lr (those given above stay fixed), ASHA on val_elbo")
    for param in PRETRAIN_SEARCH_OPTIONS:
        add_option(p, param)


def request_from_args(args: argparse.Namespace) -> PretrainRequest:
    """The request the arguments make; parameters not given stay out of ``config``, so they default
    (and a search samples them)."""
    from tuner.pretrain.request import PretrainRequest

    given = {key: getattr(args, key) for key in PRETRAIN_DEFAULTS if getattr(args, key, None) is not None}
    return PretrainRequest(
        dataset=args.dataset, config=given, data_root=args.data_root, storage=args.storage,
        experiment=args.experiment, tracking_uri=args.tracking_uri, out=args.out, search=args.search,
        num_samples=args.num_samples, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, search_seed=args.search_seed)


def pretrain_command(args: argparse.Namespace) -> int:
    """Run ``medtune pretrain`` and print where the encoder is and how to use it; the exit status."""
    from tuner.pretrain.run import run_pretrain
    from tuner.tracking import redact

    outcome = run_pretrain(request_from_args(args))
    uri = redact(outcome.tracking_uri)  # a server's URI may carry a password: never printed
    best = outcome.best
    first = outcome.history[0]["val_elbo"] if outcome.history else float("nan")
    if outcome.trials > 1:
        print(f"\nmedtune: {outcome.trials} pretraining trials, {outcome.errored} errored; best by validation ELBO: "
              f"latent_dim={outcome.config['latent_dim']} beta={outcome.config['beta']:.3g} "
              f"lr={outcome.config['lr']:.2e}")
    print(f"medtune: best epoch {best['epoch']}: val_elbo={best['val_elbo']:.2f} (recon {best['val_recon']:.2f}, "
          f"kl {best['val_kl']:.2f}); epoch 1: val_elbo={first:.2f}. {outcome.seconds:.0f} s")
    print(f"Encoder:      {outcome.encoder_path}  (+ {META_FILE}, reconstructions.png)")
    print(f"MLflow run:   {outcome.run_id} in {uri}  (experiment {outcome.experiment!r})")
    print(f"Use it:       --set weights=ssl:{outcome.encoder_path}   (backbone={outcome.config['backbone']})")
    print(f"         or   MLFLOW_TRACKING_URI={uri} ... --set weights=ssl:{outcome.run_id}")
    print(f"  or the study: MEDTUNE_SSL_ENCODER={outcome.encoder_path} medtune tune --space ssl_vs_imagenet "
          f"--dataset {args.dataset} --set backbone={outcome.config['backbone']} "
          f"--set image_size={outcome.config['image_size']}")
    return 0 if outcome.errored < outcome.trials else 1
