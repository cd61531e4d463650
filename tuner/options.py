"""The command lines' options as ``Param``s: one declaration gives argparse an option's type, default
and help, and gives the driver its check, so a range is written once and an out-of-range option is
refused before Ray starts with the one-line message every config key gets.

This module declares the options several commands share (trial resources, ASHA) and those of
``medtune confirm`` and ``medtune analyze``; ``tuner.search_request`` declares ``medtune tune``'s and
``tuner.pretrain`` the pretraining ones. Only the standard library and ``tuner.spec`` are imported, so
every parser can use it cheaply.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn

from tuner.errors import ConfigError
from tuner.spec import Param, did_you_mean


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose refusal is one line on stderr and exit status 2, like a
    ``ConfigError``'s: argparse's own prints the whole usage first, which buries the problem."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and where the options are described; exit 2."""
        self.exit(2, f"{self.prog}: error: {message}. See {self.prog} --help.\n")


def flag(name: str, prefix: str = "") -> str:
    """The option that sets ``name`` (``num_samples`` -> ``--num-samples``), with a prefix for a group
    of options of another command (``confirm_`` -> ``--confirm-seeds``)."""
    return "--" + (prefix + name).replace("_", "-")


def add_option(parser: Any, param: Param, *, prefix: str = "", default: Any = ..., help: str | None = None,
               **kwargs: Any) -> None:
    """Add ``param`` to ``parser`` (an ArgumentParser or group) as ``--<name>``: its type from the
    declaration, its default (``default`` overrides it; None: the command decides), and a help text of
    the doc, range and default. Choices are not given to argparse: the check refuses them with a
    did-you-mean."""
    types = param.type if isinstance(param.type, tuple) else (param.type,)
    value = param.default if default is ... else default
    text = help or param.doc
    if param.range_text():
        text += f"; {param.range_text()}"
    if bool in types:
        parser.add_argument(flag(param.name, prefix), action="store_true", default=value, help=text, **kwargs)
        return
    if value is not None:
        text += f" (default {value})"
    kind = float if float in types else types[0]
    kwargs.setdefault("metavar", "{" + ",".join(map(str, param.choices)) + "}" if param.choices else
                      {int: "N", float: "X"}.get(kind, "VALUE"))
    parser.add_argument(flag(param.name, prefix), type=kind, default=value,
                        help=text.replace("%", "%%"), **kwargs)


def add_search_arguments(parser: Any, tracking_default: str = "$MLFLOW_TRACKING_URI, else sqlite in --storage") -> None:
    """``--experiment``, ``--storage``, ``--tracking-uri``: which finished search a command reads (confirm,
    ensemble, sync), spelled and defaulted the same in each."""
    parser.add_argument("--experiment", required=True, help="the search (its name in --storage)")
    parser.add_argument("--storage", default="results", help="the search's Tune results folder")
    parser.add_argument("--tracking-uri", help=f"MLflow URI (default {tracking_default})")


def check_options(values: Mapping[str, Any], params: Sequence[Param], prefix: str = "") -> None:
    """Check every option ``params`` declares against ``values`` (a request's fields, parsed
    arguments), naming it as the user typed it; None means "not given" and is not checked."""
    for param in params:
        value = values.get(prefix + param.name)
        if value is not None:
            param.check(value, key=flag(param.name, prefix))


def option(param: Param, **changes: Any) -> Param:
    """``param`` under another name or default (``--max-epochs`` is ``epochs``' range, unset by default),
    so the range stays declared once."""
    return replace(param, **changes)


# Shared by `medtune tune`, `confirm` and `pretrain --search`.
CPUS_PER_TRIAL = Param("cpus_per_trial", (int, float), 1.0, "CPUs Ray reserves for each trial", low=0.0,
                       low_open=True)
GPUS_PER_TRIAL = Param("gpus_per_trial", (int, float), 0.0, "GPUs Ray reserves for each trial; fractions pack "
                       "trials on one GPU", low=0.0)
NUM_SAMPLES = Param("num_samples", int, None, "trials to sample", low=1, nullable=True)
GRACE_PERIOD = Param("grace_period", int, 1, "ASHA: epochs before a trial can be stopped", low=1)
REDUCTION_FACTOR = Param("reduction_factor", int, 2, "ASHA: 1/rf of the trials go on at each rung", low=2)

# `medtune confirm` (and `medtune tune --confirm-*`)
TOP_K = Param("top_k", int, None, "the K best configurations by validation", low=1, nullable=True)
SEEDS = Param("seeds", int, None, "fresh seeds (replicates) per configuration; 3-5 estimate the seed variance",
              low=1, nullable=True)
FOLDS = Param("folds", int, None, "k-fold cross-validation: train and val pooled and cut into this many folds "
              "(seed 0, grouped by patient where known; test untouched). Unset: the data set's own split", low=2,
              nullable=True)
CONFIRM_OPTIONS: tuple[Param, ...] = (TOP_K, SEEDS, FOLDS, option(CPUS_PER_TRIAL, default=None),
                                      option(GPUS_PER_TRIAL, default=None))

# `medtune analyze`
ANALYZE_OPTIONS: tuple[Param, ...] = (
    Param("alpha", (int, float), 0.05, "significance level and 1 - CI level", low=0.0, high=1.0, low_open=True,
          high_open=True),
    Param("resamples", int, 2000, "resamples of the bootstrap over seeds and test cases (100 or more for a 95% "
          "interval)", low=100),
    Param("refits", int, 199, "refits of the mixed model's parametric bootstrap when groups are few; 0 skips it",
          low=0),
)
ANALYZE_OPTION: dict[str, Param] = {param.name: param for param in ANALYZE_OPTIONS}


# The stores medtune logs to: MLflow's own tracking stores (a plain folder path is a file store).
TRACKING_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI whose scheme no MLflow store serves (a typo such as ``htp://`` or
    ``sqlite3:``), listing the supported ones, before anything starts; ``postgresql+psycopg2`` is
    ``postgresql`` with a driver. Only the scheme is echoed: the URI may hold a password."""
    scheme = urllib.parse.urlsplit(uri).scheme.split("+", 1)[0].lower()
    if scheme in (*TRACKING_SCHEMES, "") or uri == "databricks":
        return
    raise ConfigError(f"the tracking URI's scheme {scheme + ':'!r} is unknown.{did_you_mean(scheme, TRACKING_SCHEMES)} "
                      f"Supported: {', '.join(TRACKING_SCHEMES)}, or a folder path (e.g. sqlite:///results/mlflow.db, "
                      "http://127.0.0.1:5000). Fix --tracking-uri or $MLFLOW_TRACKING_URI.")


def check_args(args: argparse.Namespace, params: Sequence[Param], prefix: str = "") -> None:
    """``check_options`` on parsed arguments."""
    check_options(vars(args), params, prefix)


__all__ = ["ANALYZE_OPTION", "ANALYZE_OPTIONS", "CONFIRM_OPTIONS", "CPUS_PER_TRIAL", "FOLDS", "GPUS_PER_TRIAL",
           "GRACE_PERIOD", "NUM_SAMPLES", "REDUCTION_FACTOR", "SEEDS", "TOP_K", "TRACKING_SCHEMES", "OneLineParser",
           "add_option", "check_args", "check_options", "check_tracking_uri", "flag", "option"]
