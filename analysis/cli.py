"""``medtune analyze`` / ``python -m analysis``."""

from __future__ import annotations

import argparse
import sys

from tuner.errors import ConfigError


def analyze(experiment: str, *, tracking_uri: str | None, storage: str, out: str | None) -> int:
    from analysis.report import write_report

    path = write_report(experiment, tracking_uri=tracking_uri, storage=storage, out=out)
    print(f"medtune: report written to {path} (and logged to the search's parent MLflow run)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Analyse a finished search.")
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--storage", default="results")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    try:
        return analyze(args.experiment, tracking_uri=args.tracking_uri, storage=args.storage, out=args.out)
    except ConfigError as error:
        print(f"medtune: error: {error}", file=sys.stderr)
        return 2
