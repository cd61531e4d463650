"""The confirmation stage's command line: ``medtune confirm`` and ``medtune tune``'s ``--confirm-*``
options (the same rules, run as soon as the search ends). Argument parsing only at import, so that
``medtune -h`` stays fast; the stage itself (``tuner.confirm``: Ray, torch) is imported when it runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from tuner.options import CPUS_PER_TRIAL, FOLDS, GPUS_PER_TRIAL, SEEDS, TOP_K, add_option, add_search_arguments

if TYPE_CHECKING:
    from tuner.confirm import ConfirmRequest


def add_confirm_parser(commands: argparse._SubParsersAction) -> None:
    """``medtune confirm``: the search to confirm, the selection rule, the replicates, ``--resume``."""
    p = commands.add_parser("confirm", help="re-run a search's chosen configurations at full budget with fresh seeds",
                            description="The confirmation stage: choose configurations of a finished search on "
                                        "validation, re-train each at its full epochs with no early stopping, with "
                                        "N fresh seeds (or on K folds), logged under the search's MLflow parent "
                                        "run (medtune.stage=confirm). Its runs are the ones to draw conclusions "
                                        "from.")
    add_search_arguments(p, "the search's, else $MLFLOW_TRACKING_URI, else sqlite in --storage")
    _add_rule(p, "")
    add_option(p, SEEDS, metavar="N")
    add_option(p, FOLDS, metavar="K", help="run each replicate on each of K folds of train+val")
    p.add_argument("--resume", action="store_true", help="continue an interrupted confirmation stage")
    p.add_argument("--data-root", help="folder of the data (default: the search's)")
    add_option(p, CPUS_PER_TRIAL, default=None, help="CPUs per run (default: the search's)")
    add_option(p, GPUS_PER_TRIAL, default=None, help="GPUs per run (default: the search's)")
    p.add_argument("--register", metavar="NAME", help=REGISTER_HELP)


REGISTER_HELP = ("register the best model (the confirmed best, after a confirmation stage) in MLflow's model "
                 "registry under NAME, as a new version")


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """``medtune tune``'s ``--confirm-*`` group: a rule there runs the stage straight after the search."""
    stage = parser.add_argument_group("confirmation stage", "run `medtune confirm` on this search as soon as it ends")
    _add_rule(stage, "confirm-")
    add_option(stage, SEEDS, prefix="confirm-", default=3, metavar="N", help="replicates per configuration")
    add_option(stage, FOLDS, prefix="confirm-", metavar="K", help="and run each replicate on each of K folds")


def _add_rule(parser: Any, prefix: str) -> None:
    rules = parser.add_mutually_exclusive_group()
    add_option(rules, TOP_K, prefix=prefix, metavar="K")
    rules.add_argument(f"--{prefix}per-level", metavar="FACTOR[,FACTOR]",
                       help="the validation-best configuration of each level (cell) of the factors")
    rules.add_argument(f"--{prefix}factorial", metavar="FACTOR[,FACTOR]",
                       help="every combination of the factors' levels, other knobs at the search's best")


def confirm_request(args: argparse.Namespace, prefix: str) -> ConfirmRequest | None:
    """The checked ``ConfirmRequest`` the options with ``prefix`` (``""`` for ``medtune confirm``,
    ``"confirm_"`` for ``medtune tune``) ask for; None when ``medtune tune`` was given no rule."""
    from tuner.confirm import ConfirmRequest, Selection, check_request

    top_k, per_level, factorial = (getattr(args, prefix + name) for name in ("top_k", "per_level", "factorial"))
    selection = (Selection("top_k", k=top_k) if top_k is not None else
                 Selection("per_level", factors=tuple(per_level.split(","))) if per_level else
                 Selection("factorial", factors=tuple(factorial.split(","))) if factorial else None)
    if prefix and selection is None:
        return None
    request = ConfirmRequest(experiment=args.experiment or "", selection=selection,
                             seeds=getattr(args, prefix + "seeds"), folds=getattr(args, prefix + "folds"),
                             storage=args.storage, tracking_uri=args.tracking_uri, resume=args.resume and not prefix,
                             data_root=args.data_root, cpus_per_trial=args.cpus_per_trial,
                             gpus_per_trial=args.gpus_per_trial, register=args.register)
    check_request(request)
    return request


def confirm_command(request: ConfirmRequest) -> int:
    """Run the stage and print its summary; exit status 1 unless every run reached its end."""
    from tuner.confirm import run_confirm, summary_lines

    outcome = run_confirm(request)
    print("\n" + "\n".join(summary_lines(outcome)))
    print(f"  analyze:     medtune analyze --experiment {request.experiment} --storage {request.storage}")
    return 0 if outcome.completed + outcome.diverged == outcome.runs else 1


def confirm_after_search(request: ConfirmRequest, experiment: str, resume: bool) -> int:
    """``medtune tune --confirm-*``: the stage of the search ``experiment`` just run; a resumed search
    resumes its stage too, if one was started."""
    from tuner.confirm import confirm_dir
    from tuner.schema import SEARCH_FILE

    request.experiment = experiment
    request.resume = resume and (confirm_dir(request.storage, experiment) / SEARCH_FILE).is_file()
    return confirm_command(request)
