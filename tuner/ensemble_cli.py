"""``medtune ensemble``: the top-k ensemble of a finished search (k given, or chosen on validation), or the
confirmed seeds of one configuration, scored on test and written to a folder as a model to take away
(``tuner.ensemble_model``). Argument parsing only at import, so that ``medtune -h`` stays fast; the
analysis and torch are imported when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.errors import ConfigError
from tuner.options import add_search_arguments

ENSEMBLE_SCORES_FILE = "test_scores.csv"  # the ensemble's own per-case test scores, in the trials' format


def add_ensemble_parser(commands: argparse._SubParsersAction) -> None:
    """``medtune ensemble``: which search, which ensemble (``--k`` or ``--confirmed``), where to write it."""
    p = commands.add_parser(
        "ensemble", help="average the best trials of a search (chosen on validation) into one model",
        description="Build the top-k ensemble of a finished search: the mean of the class probabilities of its k "
                    "best trials by validation (--k auto chooses k on validation too), or of the confirmed seeds of "
                    "one configuration (--confirmed). Scores it on test (AUC, DeLong CI, paired DeLong against the "
                    "single best trial by validation) and writes the members' best weights, configs and "
                    "preprocessing with a manifest to --out; tuner.ensemble_model.load_ensemble(OUT) loads it.")
    add_search_arguments(p)
    p.add_argument("--offline", action="store_true", help="read the Tune folders alone, without MLflow")
    p.add_argument("--out", required=True, help="folder to write the ensemble into (new or empty)")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--k", default="auto", help="how many best trials to average, or 'auto' (default): the k "
                                                   "whose ensemble of validation scores has the best validation AUC")
    rule.add_argument("--confirmed", nargs="?", const="best", metavar="CONFIG_ID",
                      help="average the confirmed seeds of CONFIG_ID (default: the best confirmed configuration "
                           "by mean validation value)")
    p.add_argument("--max-k", type=int, default=10, help="the largest k --k auto tries")
    p.add_argument("--stage", default="explore", choices=["explore", "confirm"],
                   help="whose trials --k ranks: the search's (explore) or the confirmation runs'")


def ensemble_command(args: argparse.Namespace) -> int:
    """Build, score and write the ensemble; print what it is and where it went."""
    from analysis.ensemble import seed_ensemble, top_k_ensemble
    from analysis.loading import load_search
    from tuner.ensemble_model import export_ensemble

    loaded = load_search(args.experiment, args.tracking_uri, args.storage, "tune" if args.offline else "mlflow")
    if args.confirmed is not None:
        ensemble = seed_ensemble(loaded, None if args.confirmed == "best" else args.confirmed,
                                 experiment=args.experiment)
    else:
        ensemble = top_k_ensemble(loaded, args.k, stage=args.stage, max_k=args.max_k, experiment=args.experiment)
    summary = ensemble.summary()
    about = {"experiment": args.experiment, "rule": ensemble.rule, "k_chosen_by": ensemble.k_rule,
             "selection": ensemble.select, "test": summary,
             "val_curve": None if ensemble.val_curve is None else ensemble.val_curve.to_dict("records")}
    missing = [m.run_name for m in ensemble.members if m.trial_dir is None]
    if missing:
        raise ConfigError(f"trial(s) {', '.join(missing)} have no recorded Tune folder, which holds their weights; "
                          "run `medtune sync` for this search, or use --offline with its --storage.")
    manifest = export_ensemble([m.trial_dir for m in ensemble.members], [m.run_name for m in ensemble.members],
                               args.out, task=ensemble.task, num_outputs=ensemble.scores.shape[1], about=about)
    _write_scores(ensemble, Path(args.out) / ENSEMBLE_SCORES_FILE)
    chosen = {"validation": "k chosen on validation", "given": "k given", "seeds": "one configuration's seeds"}
    print(f"medtune: {ensemble.rule} ensemble of {ensemble.k} trial(s) ({chosen[ensemble.k_rule]}), by "
          f"{ensemble.select}: " + ", ".join(f"{m.run_name} ({m.validation:.4f})" for m in ensemble.members))
    line = f"  test AUC {summary['test_auc']:.4f}"
    if "ci_low" in summary:
        line += f" (95% DeLong CI {summary['ci_low']:.4f} to {summary['ci_high']:.4f})"
    line += (f"; best single trial by validation ({summary['reference']}) {summary['reference_test_auc']:.4f}; "
             f"difference {summary['difference']:+.4f}")
    if "p_value" in summary:
        line += f", paired DeLong p = {summary['p_value']:.3g}"
    print(line)
    print(f"  written to {manifest.parent}; load it with tuner.ensemble_model.load_ensemble({str(manifest.parent)!r})")
    return 0


def _write_scores(ensemble, path: Path) -> None:
    """The ensemble's mean test scores, in the trials' ``index, label.., score_..`` layout."""
    import pandas as pd

    frame = pd.DataFrame({"index": ensemble.index})
    if ensemble.multilabel:
        for column in range(ensemble.labels.shape[1]):
            frame[f"label_{column}"] = ensemble.labels[:, column]
    else:
        frame["label"] = ensemble.labels
    for column in range(ensemble.scores.shape[1]):
        frame[f"score_{column}"] = ensemble.scores[:, column]
    frame.to_csv(path, index=False, float_format="%.9g")
