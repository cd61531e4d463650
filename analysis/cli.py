"""``medtune analyze`` / ``python -m analysis``: the report of one or more finished searches.

Only the standard library is imported here, so building the parser costs nothing; the analysis
itself is imported when it runs.
"""

from __future__ import annotations

import argparse
import sys

from tuner.errors import ConfigError
from tuner.options import ANALYZE_OPTION, ANALYZE_OPTIONS, add_option, check_args
from tuner.terminal import add_verbosity_arguments, terminal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The analyze options, shared by ``medtune analyze`` and ``python -m analysis``."""
    parser.add_argument(
        "--experiment",
        required=True,
        action="append",
        metavar="NAME",
        help="the search's name (its MLflow experiment and Tune folder); repeat it to analyze several "
        "searches together (e.g. one per data set)",
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI, else sqlite in --storage)"
    )
    parser.add_argument(
        "--storage", default="results", help="the Tune results folder (and default sqlite store)"
    )
    parser.add_argument("--out", help="report folder (default <storage>/<experiment>/report)")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="read the Tune folder <storage>/<experiment> alone, without MLflow (the report is not logged)",
    )
    parser.add_argument(
        "--formula",
        help="mixed-model formula, e.g. 'test_auc ~ C(head) + C(unfreeze) + log10_lr' "
        "(default: the search space's ANALYSIS)",
    )
    parser.add_argument(
        "--metric", help="the outcome analyzed (default: the formula's response, else test_auc)"
    )
    parser.add_argument(
        "--random",
        help="comma-separated random-effect columns (default config_id,dataset: the configuration its seeds "
        "replicate, and the data set; crossed when both vary); 'none' for fixed effects only",
    )
    parser.add_argument("--logit", action="store_true", help="model logit(metric): for AUCs near 1")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="FACTOR[=LEVEL,LEVEL,...]",
        help="DeLong comparison of the levels of a factor, the first level the reference, e.g. "
        "--compare weights=imagenet,radimagenet; repeatable (Holm's correction across all)",
    )
    parser.add_argument(
        "--compare-mode",
        choices=["best", "pooled"],
        help="best: each level's best trial by validation AUC; pooled: its best configuration with every "
        "seed's test scores averaged (default: pooled on confirmation runs, best on search trials)",
    )
    parser.add_argument(
        "--alternative",
        choices=["two-sided", "greater", "less"],
        default="two-sided",
        help="DeLong alternative: greater = the level beats the reference",
    )
    add_option(parser, ANALYZE_OPTION["alpha"])
    parser.add_argument(
        "--include-stopped",
        action="store_true",
        help="exploratory analyses (no confirmation runs) pool the trials that ASHA or patience stopped, or that "
        "diverged, with those that ran their whole budget (default: complete budgets only; the report's "
        "sensitivity section shows both either way)",
    )
    add_option(parser, ANALYZE_OPTION["resamples"])
    add_option(parser, ANALYZE_OPTION["refits"])
    add_verbosity_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Write the report; 0 when every section could be computed, 1 when some could not because of the
    input (each problem printed), 2 (raised as ConfigError) when nothing could be analyzed."""
    from analysis.report import AnalysisOptions, build_report

    check_args(args, ANALYZE_OPTIONS)  # their declared ranges (tuner.options)
    random = None
    if args.random is not None:
        random = (
            []
            if args.random.strip().lower() == "none"
            else [r.strip() for r in args.random.split(",") if r.strip()]
        )
    options = AnalysisOptions(
        formula=args.formula,
        metric=args.metric,
        random=random,
        logit=args.logit,
        compare=list(args.compare),
        compare_mode=args.compare_mode,
        alternative=args.alternative,
        alpha=args.alpha,
        include_stopped=args.include_stopped,
        resamples=args.resamples,
        refits=args.refits,
    )
    report = build_report(
        args.experiment,
        args.tracking_uri,
        args.storage,
        args.out,
        source="tune" if args.offline else "mlflow",
        options=options,
    )
    print(f"medtune: report written to {report.html_path} and {report.markdown_path.name} (same folder)")
    if report.logged_to:
        print(f"medtune: logged to the search's parent MLflow run(s): {', '.join(report.logged_to)}")
    elif args.offline:
        print("medtune: offline analysis: the report was not logged to MLflow")
    for problem in report.problems:
        print(f"medtune: warning: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis``: the report without the ``medtune`` script (a checkout that was never
    pip-installed has none), with the same options and exit status as ``medtune analyze``; a
    ConfigError is printed as one line, not a traceback, because it is the user's to fix."""
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Analyze finished searches.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        with terminal(args.verbosity, args.storage):
            return run(args)
    except ConfigError as error:
        print(f"medtune: error: {error}", file=sys.stderr)
        return 2
