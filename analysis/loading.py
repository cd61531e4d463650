"""Trials of finished searches as one pandas row per trial, from MLflow or from the Tune folders alone.

Two sources give the same frame:

- ``source="mlflow"``: the search's MLflow experiment (a server, or the local sqlite store that
  ``medtune tune`` keeps in ``--storage``): one child run per trial of the search and of its
  confirmation stage (``analysis.source_mlflow``);
- ``source="tune"``: the Tune folders ``<storage>/<experiment>/`` and, when it ran,
  ``<storage>/<experiment>-confirm/`` alone, offline (``analysis.source_tune``).

Columns, in this order:

- bookkeeping: ``experiment``, ``dataset``, ``stage`` (``explore``: a search trial; ``confirm``: a
  replicate of the confirmation stage), ``config_id`` (the configuration its seeds and folds
  replicate), ``trial_id``, ``run_name``, ``outcome`` (completed, stopped_early by ASHA,
  early_stopping by the trial's patience, diverged), ``epochs_trained``, ``parent_run_id``;
- the trial's parameters (its config, typed back from MLflow's strings), sorted by name;
- its metrics, sorted by name: the last finite value it reported (``test_*`` are those of its
  best-validation model). A metric named like a parameter (``lr``: the learning rate of the last
  epoch, after the schedule) becomes ``final_<name>``, so the ``lr`` column stays the configured one;
- ``log10_lr`` (when there is an ``lr``);
- where the trial lives, which differs between the sources (``SOURCE_COLUMNS``): ``run_id`` (the
  MLflow run; None offline), ``trial_dir`` (the Tune trial folder) and ``test_scores`` (artifact URI
  or file path of its per-sample test scores; None when it has none).

Rows are finished trials only, sorted by experiment, stage (explore first) and trial id. Errored and
unfinished trials are counted in ``LoadedSearch.notes``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.records import Collected, SearchInfo, is_number
from analysis.source_mlflow import read_mlflow
from analysis.source_tune import infer_task, read_tune, result_lines
from tuner.errors import ConfigError
from tuner.schema import STAGES

__all__ = ["LoadedSearch", "SearchInfo", "config_keys", "infer_task", "load_search", "load_test_scores",
           "load_trials", "selection_column"]

SOURCES = ("mlflow", "tune")
SOURCE_COLUMNS = ("run_id", "trial_dir", "test_scores")
BOOKKEEPING_COLUMNS = (
    "experiment",
    "dataset",
    "stage",
    "config_id",
    "trial_id",
    "run_name",
    "outcome",
    "epochs_trained",
    "parent_run_id",
)
HISTORY_KEYS = ("train_loss", "val_loss", "train_acc", "val_acc", "val_auc", "gap_acc", "gap_loss")


@dataclass
class LoadedSearch:
    """The trials frame of one or more searches, and how to read more of each trial."""

    frame: pd.DataFrame
    searches: list[SearchInfo]
    source: str
    param_columns: list[str]
    metric_columns: list[str]
    tracking_uri: str | None = None
    notes: list[str] = field(default_factory=list)
    _scores: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    def test_scores(self, row: pd.Series | dict) -> pd.DataFrame | None:
        """The trial's per-sample test scores (index, label or label_0.., score_0..); None if none."""
        location = row.get("test_scores")
        if not isinstance(location, str):
            return None
        if location not in self._scores:
            try:
                if self.source == "tune":
                    self._scores[location] = pd.read_csv(location)
                else:
                    self._scores[location] = load_test_scores(location, self.tracking_uri)
            except Exception as error:  # a missing or unreadable file: say so, do not fail the report
                self.notes.append(
                    f"Test scores of trial {row.get('run_name')} could not be read ({type(error).__name__}: "
                    f"{str(error)[:200]})."
                )
                self._scores[location] = None
        return self._scores[location]

    def history(self, row: pd.Series | dict, keys: Iterable[str] = HISTORY_KEYS) -> pd.DataFrame:
        """Per-epoch values of ``keys`` (those the trial reported), indexed by epoch."""
        keys = [k for k in keys if k in self.metric_columns]
        if self.source == "tune":
            by_epoch: dict[int, dict[str, float]] = {}
            for line in result_lines(Path(row["trial_dir"])):
                if "epoch" not in line:
                    continue
                values = {k: float(line[k]) for k in keys if is_number(line.get(k))}
                by_epoch[int(line["epoch"])] = {k: v for k, v in values.items() if math.isfinite(v)}
            frame = pd.DataFrame.from_dict(by_epoch, orient="index", columns=keys)
        else:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.tracking_uri)
            columns = {}
            for key in keys:
                latest: dict[int, tuple[int, float]] = {}
                for metric in client.get_metric_history(row["run_id"], key):
                    if metric.step not in latest or metric.timestamp >= latest[metric.step][0]:
                        latest[metric.step] = (metric.timestamp, metric.value)
                columns[key] = pd.Series({step: value for step, (_, value) in latest.items()}, dtype=float)
            frame = pd.DataFrame(columns, columns=keys)
        frame.index.name = "epoch"
        return frame.sort_index().astype(float)


def load_trials(
    experiment: str | list[str],
    tracking_uri: str | None = None,
    storage: str | os.PathLike = "results",
    source: str = "mlflow",
) -> pd.DataFrame:
    """One row per finished trial of the named experiment(s) and their confirmation stages.

    ``source="mlflow"`` reads the MLflow experiment(s) (``tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else the sqlite store in ``storage``); ``source="tune"`` reads the Tune
    folders in ``storage`` only. Both give the same frame (see the module docstring).
    """
    return load_search(experiment, tracking_uri, storage, source).frame


def load_search(
    experiment: str | list[str],
    tracking_uri: str | None = None,
    storage: str | os.PathLike = "results",
    source: str = "mlflow",
) -> LoadedSearch:
    """``load_trials``'s frame with the searches' details and readers for curves and test scores."""
    names = [experiment] if isinstance(experiment, str) else list(dict.fromkeys(experiment))
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"name at least one experiment (got {experiment!r}).")
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; use 'mlflow' or 'tune'.")
    if source == "mlflow":
        from tuner.tracking import resolve_tracking_uri  # the search's own rule, so both find one store

        uri = resolve_tracking_uri(tracking_uri, Path(storage).expanduser().resolve())
        collected = read_mlflow(names, uri, Path(storage))
    else:
        uri = None
        collected = read_tune(names, Path(storage).expanduser().resolve())
    searches = collected.searches
    notes = []
    for info in searches:
        for stage in sorted(info.counts, key=STAGES.index):
            errored, unfinished = info.count("errored", stage), info.count("unfinished", stage)
            if errored or unfinished:
                notes.append(
                    f"{info.experiment} ({stage}): {info.count('finished', stage)} finished trials analyzed; "
                    f"left out {errored} errored and {unfinished} unfinished (running or pending) trials."
                )
    empty = [info.experiment for info in searches if info.finished == 0]
    if len(empty) == len(searches):
        which = ", ".join(repr(n) for n in empty)
        errored = sum(s.errored for s in searches)
        unfinished = sum(s.unfinished for s in searches)
        raise ConfigError(
            f"experiment {which} has no finished trials yet ({errored} errored, {unfinished} unfinished); "
            "run or resume its search first, then analyze it."
        )
    for name in empty:
        notes.append(f"{name}: no finished trials; it adds nothing to this analysis.")
    frame = _assemble(collected)
    return LoadedSearch(frame, searches, source, sorted(collected.params), sorted(collected.metrics), uri, notes)


def load_test_scores(uri: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """A trial's per-sample test scores from its MLflow artifact URI: columns index, label (or
    label_0 .. label_{K-1} for multi-label tasks), score_0 .. score_{C-1}."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
    return pd.read_csv(local)


def selection_column(frame: pd.DataFrame) -> str | None:
    """The column that ranks trials on validation: ``best_score`` (each trial's best value of the
    validation metric it selects its epoch by) where trials report it, else ``best_val_auc``."""
    for name in ("best_score", "best_val_auc"):
        if name in frame and frame[name].notna().any():
            return name
    return None


def config_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One text key per row for the values of ``columns`` (missing values included), to group the
    trials that ran the same configuration."""
    if not columns:
        return pd.Series("", index=frame.index)
    cells = frame[columns].map(lambda v: "n/a" if _missing(v) else repr(v))
    return cells.agg("|".join, axis=1)


def _assemble(collected: Collected) -> pd.DataFrame:
    rows = collected.rows
    params = [p for p in sorted(collected.params) if p not in BOOKKEEPING_COLUMNS]
    metrics = [m for m in sorted(collected.metrics) if m not in params]
    columns = list(BOOKKEEPING_COLUMNS) + params + metrics
    frame = pd.DataFrame(rows, columns=columns + list(SOURCE_COLUMNS))
    if "dataset" not in {k for row in rows for k in row}:
        frame["dataset"] = frame["experiment"]
    for name in metrics:
        frame[name] = frame[name].astype(float)
    frame["epochs_trained"] = frame["epochs_trained"].astype(int)
    if "lr" in params:
        lr = pd.to_numeric(frame["lr"], errors="coerce")
        with np.errstate(divide="ignore", invalid="ignore"):
            frame.insert(len(columns), "log10_lr", np.log10(lr.where(lr > 0)))
    order = frame["stage"].map({stage: i for i, stage in enumerate(STAGES)})
    frame = (frame.assign(_order=order).sort_values(["experiment", "_order", "trial_id"], kind="stable")
             .drop(columns="_order").reset_index(drop=True))
    frame.attrs["param_columns"] = params
    frame.attrs["metric_columns"] = metrics
    return frame


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
