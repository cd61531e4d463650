"""``medtune``: ``tune`` runs a search, ``confirm`` re-runs its chosen configurations at full budget with
fresh seeds, ``train`` runs one trial in-process (no Ray), ``analyze`` writes the statistics of a finished
search."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

from tuner.confirm_cli import (
    REGISTER_HELP,
    add_confirm_parser,
    add_tune_arguments,
    confirm_after_search,
    confirm_command,
    confirm_request,
)
from tuner.ensemble_cli import add_ensemble_parser, ensemble_command
from tuner.errors import ConfigError
from tuner.interrupt import SearchInterrupted, exit_at_once_on_another_signal, resume_command
from tuner.options import OneLineParser, add_option, add_search_arguments
from tuner.search_request import TUNE_OPTION
from tuner.terminal import DEFAULT, add_verbosity_arguments, terminal


def _add_tune(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("tune", help="run a hyperparameter search with Ray Tune",
                            description="Run a search: Optuna TPE (or random, or grid) with ASHA early "
                                        "stopping on val_auc, every trial logged to MLflow.")
    p.add_argument("--space", required=True, help="search-space module in search_spaces/ (e.g. quick)")
    p.add_argument("--dataset", required=True, help="MedMNIST name (breastmnist), image folder, or .npz")
    p.add_argument("--data-root", help="folder of MedMNIST .npz files (default $MEDTUNE_DATA_ROOT, ~/.medmnist)")
    for name in ("num_samples", "max_epochs", "search", "cpus_per_trial", "gpus_per_trial"):
        add_option(p, TUNE_OPTION[name])  # from the declarations `prepare` checks the request against
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pin a parameter")
    p.add_argument("--storage", default="results", help="Tune results folder (shared storage on a cluster)")
    p.add_argument("--experiment", help="search name (default <space>-<dataset>-<time>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI, else sqlite in --storage)")
    p.add_argument("--resume", action="store_true", help="continue the search --experiment in --storage")
    for name in ("seed", "metric", "grace_period", "reduction_factor", "checkpoint_every", "checkpoint_seconds"):
        add_option(p, TUNE_OPTION[name])
    p.add_argument("--patient-regex", help=_PATIENT_REGEX_HELP)
    p.add_argument("--register", metavar="NAME", help=REGISTER_HELP)
    add_tune_arguments(p)


_PATIENT_REGEX_HELP = ("image folders: regex finding the patient ID in each file name (group `patient`, else 1), so "
                       "that no patient is in two splits")


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="run one trial in this process, without Ray (to debug a config)")
    p.add_argument("--space", required=True, help="search-space module whose first grid point is the base")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="results/train", help="folder for the checkpoint")
    p.add_argument("--patient-regex", help=_PATIENT_REGEX_HELP)
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    from tuner.pretrain.cli import add_arguments  # argparse and the pretraining config only: cheap

    p = commands.add_parser("pretrain", help="self-supervised VAE pretraining of a backbone's trunk (weights=ssl:)",
                            description="Stage I of the VAE study: train a VAE whose encoder is a backbone's trunk "
                                        "on the training images (no labels), with the ELBO and a linear KL warm-up; "
                                        "log it to MLflow and save the encoder for weights=ssl:<file or run id>.")
    add_arguments(p)


def _add_analyze(commands: argparse._SubParsersAction) -> None:
    from analysis.cli import add_arguments  # standard library only: cheap to import

    p = commands.add_parser("analyze", help="mixed models, DeLong tests, tables and plots of a search",
                            description="Write the report of one or more finished searches (HTML and "
                                        "Markdown, CSV tables, PNG plots), logged to each search's parent "
                                        "MLflow run.")
    add_arguments(p)


def _add_sync(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sync", help="log to MLflow what a search's Tune folder holds and MLflow lacks",
                            description="Back-fill MLflow from a search's Tune results, e.g. after the tracking "
                                        "server was down. Safe to repeat: only what is missing is logged.")
    add_search_arguments(p)


def _add_weights(commands: argparse._SubParsersAction) -> None:
    from tuner.models.convert import add_weights_import_arguments

    weights = commands.add_parser("weights", help="prepare starting weights (import another library's checkpoint)")
    actions = weights.add_subparsers(dest="weights_command", required=True)
    add_weights_import_arguments(actions.add_parser(
        "import", help="convert a checkpoint in another implementation's key names to a backbone's",
        description="Convert a checkpoint written for another implementation of the same architecture (e.g. "
                    "efficientnet_pytorch's EfficientNet-Lite0) into a medtune backbone's key names, checked "
                    "tensor by tensor, for use as weights=<file>."))


def _add_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="the data root: list its files (sizes, MD5), fetch MedMNIST files")
    actions = data.add_subparsers(dest="data_command", required=True)
    for command, text in (("list", "list the data root's .npz files with their sizes and MD5 status"),
                          ("fetch", "download official MedMNIST files (MD5-checked) into the data root now")):
        p = actions.add_parser(command, help=text, description=text)
        p.add_argument("--data-root", help="folder of MedMNIST .npz files (default $MEDTUNE_DATA_ROOT, ~/.medmnist)")
        if command == "fetch":
            p.add_argument("names", nargs="+", metavar="NAME", help="MedMNIST names, e.g. breastmnist_128")


def build_parser() -> argparse.ArgumentParser:
    """Every ``medtune`` subcommand and its arguments, in one parser (so ``medtune -h`` lists them all)."""
    parser = OneLineParser(prog="medtune", description=__doc__)  # its subcommands' parsers are OneLineParsers too
    commands = parser.add_subparsers(dest="command", required=True)
    _add_tune(commands)
    _add_train(commands)
    _add_pretrain(commands)
    _add_analyze(commands)
    _add_sync(commands)
    add_confirm_parser(commands)
    add_ensemble_parser(commands)
    _add_weights(commands)
    _add_data(commands)
    for name in ("tune", "pretrain", "confirm"):  # analyze's arguments have them already
        add_verbosity_arguments(commands.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """``medtune``: run one subcommand; bad input is one ``medtune: error:`` line and exit status 2,
    never a traceback. Its terminal shows what ``--verbose`` / ``--quiet`` ask (``tuner.terminal``)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: the resume command repeats it
    with terminal(getattr(args, "verbosity", DEFAULT), getattr(args, "storage", None)):
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "tune":
            return _tune(args)
        if args.command == "train":
            return _train(args)
        if args.command == "pretrain":
            from tuner.pretrain.cli import pretrain_command

            return pretrain_command(args)
        if args.command == "weights":
            from tuner.models.convert import weights_import_command

            return weights_import_command(args)
        if args.command == "ensemble":
            return ensemble_command(args)
        if args.command == "data":
            from tuner.data.catalog import data_command

            return data_command(args)
        if args.command == "confirm":
            return confirm_command(confirm_request(args, ""))
        if args.command == "sync":
            from tuner.search import sync_search

            trials, added = sync_search(args.storage, args.experiment, args.tracking_uri)
            print(f"medtune: {trials} trials checked; {added} epoch results were missing from MLflow and are logged.")
            return 0
        from analysis.cli import run

        return run(args)
    except ConfigError as error:
        print(f"medtune: error: {error}", file=sys.stderr)
        return 2


def _tune(args: argparse.Namespace) -> int:
    from tuner.tracking import redact  # a server's URI may carry a password: never printed

    confirm = confirm_request(args, "confirm_")  # checked before the search starts
    try:
        outcome = _run_tune(args, confirm is not None)
    except SearchInterrupted as stop:  # Ctrl-C or SIGTERM: how to go on (tuner.interrupt)
        exit_at_once_on_another_signal()  # the process is ending: one more Ctrl-C ends it now
        print(stop.advice(resume_command(args.argv, stop.experiment)), file=sys.stderr, flush=True)
        return stop.exit_code
    except KeyboardInterrupt:  # before any trial started: nothing to resume
        print("medtune: interrupted before the search started; nothing was run.", file=sys.stderr, flush=True)
        return 130
    print(f"\nmedtune: {outcome.trials} trials: {outcome.completed} completed, {outcome.stopped_early} stopped "
          f"early by ASHA, {outcome.errored} errored.")
    if outcome.arm_factors:
        print(outcome.arms_line())
    if outcome.best:
        print(f"best (by {args.metric}): {args.metric}={outcome.best['best_score']:.4f} "
              f"test_auc={outcome.best['test_auc']:.4f} test_acc={outcome.best['test_acc']:.4f}")
        print("  " + json.dumps(outcome.best["config"]))
    print(f"Tune results:  {outcome.experiment_dir}")
    print(f"MLflow runs:   {redact(outcome.tracking_uri)}  (experiment {outcome.experiment!r})")
    print("\n".join(outcome.runs_lines()))
    if outcome.model_uri:
        print(f"best model:    {outcome.model_uri}" + (f"  (registered: {outcome.registered})"
                                                       if outcome.registered else ""))
    print(f"  analyze:     medtune analyze --experiment {outcome.experiment} --storage {args.storage}")
    status = 0 if outcome.errored < outcome.trials else 1
    return status if confirm is None else max(status, confirm_after_search(confirm, outcome.experiment, args.resume))


def _run_tune(args: argparse.Namespace, confirm: bool) -> Any:
    """The search ``medtune tune``'s arguments ask for (with ``--confirm-*``, the model is registered after it)."""
    from tuner.search import SearchRequest, run_search

    return run_search(SearchRequest(
        space=args.space, dataset=args.dataset, data_root=args.data_root, num_samples=args.num_samples,
        max_epochs=args.max_epochs, search=args.search, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, pins=pins_from_pairs(args.set), storage=args.storage,
        experiment=args.experiment, tracking_uri=args.tracking_uri, resume=args.resume, seed=args.seed,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, metric=args.metric,
        patient_regex=args.patient_regex, register=None if confirm else args.register,
        checkpoint_every=args.checkpoint_every, checkpoint_seconds=args.checkpoint_seconds))


def _train(args: argparse.Namespace) -> int:
    from search_spaces import enumerate_space, get_space
    from tuner.config import make_trial_config
    from tuner.data import load_dataset
    from tuner.training.session import LocalSession
    from tuner.training.trial import run_trial

    pins = pins_from_pairs(args.set)
    for key, value in pins.items():
        if isinstance(value, list):
            raise ConfigError(f"--set {key}={value}: medtune train runs one configuration, and this lists "
                              f"several. Pin one (--set {key}={value[0]!r}), or search them with medtune tune.")
    config = make_trial_config(enumerate_space(get_space(args.space).define, pins)[0])
    data = load_dataset(args.dataset, args.data_root, patient_regex=args.patient_regex)
    print("medtune: training " + json.dumps(config), flush=True)
    out = Path(args.out)
    result = run_trial(config, data, LocalSession(out, resume=args.resume))
    print(f"medtune: done; best val_auc={result['best_val_auc']:.4f} test_auc={result['test_auc']:.4f}; "
          f"checkpoint in {out / 'checkpoint'}")
    return 0


def pins_from_pairs(pairs: list[str]) -> dict[str, Any]:
    """``--set`` pairs (``["lr=1e-3", "head=conv"]``) to typed values: Python literals where they parse
    (numbers, lists, None), ``true``/``false`` as booleans, anything else as the word itself."""
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
