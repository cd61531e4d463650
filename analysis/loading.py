"""Trials of finished searches as one pandas row per trial, from MLflow or from the Tune folder alone.

Two sources give the same frame:

- ``source="mlflow"``: the search's MLflow experiment (a server, or the local sqlite store that
  ``medtune tune`` keeps in ``--storage``): one child run per trial.
- ``source="tune"``: the Tune experiment folder ``<storage>/<experiment>/`` alone, offline: each
  trial folder's ``params.json`` (its config), ``result.json`` (one line per epoch) and newest
  ``checkpoint_NNNNNN/test_scores.csv``; trial states from Tune's ``experiment_state-*.json``; and
  from ``medtune_search.json`` the params the search logged with every trial beside its config
  (``trial_params``: the data set's name), read as recorded, never re-derived.

Columns, in this order:

- bookkeeping: ``experiment``, ``dataset``, ``trial_id``, ``run_name``, ``outcome`` (completed,
  stopped_early by ASHA, early_stopping by the trial's patience), ``epochs_trained``,
  ``parent_run_id``;
- the trial's parameters (its config, typed back from MLflow's strings), sorted by name;
- its metrics, sorted by name: the last finite value it reported (``test_*`` are those of its
  best-validation model). A metric named like a parameter (``lr``: the learning rate of the last
  epoch, after the schedule) becomes ``final_<name>``, so the ``lr`` column stays the configured one;
- ``log10_lr`` (when there is an ``lr``);
- where the trial lives, which differs between the sources (``SOURCE_COLUMNS``): ``run_id`` (the
  MLflow run; None offline), ``trial_dir`` (the Tune trial folder) and ``test_scores`` (artifact URI
  or file path of its per-sample test scores; None when it has none).

Rows are finished trials only (completed, or stopped early by ASHA), sorted by experiment and
trial id. Errored and unfinished trials are counted in ``LoadedSearch.notes``.
"""

from __future__ import annotations

import ast
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuner.errors import ConfigError

SOURCES = ("mlflow", "tune")
SOURCE_COLUMNS = ("run_id", "trial_dir", "test_scores")
BOOKKEEPING_COLUMNS = (
    "experiment",
    "dataset",
    "trial_id",
    "run_name",
    "outcome",
    "epochs_trained",
    "parent_run_id",
)
SEARCH_FILE = "medtune_search.json"  # tuner.search.SEARCH_FILE (not imported: it pulls in torch)
TEST_SCORES_FILE = "test_scores.csv"
_TRIAL_ID_TAG = "medtune.trial_id"
_OUTCOME_TAG = "medtune.outcome"
_TEST_SCORES_TAG = "medtune.test_scores"
_ROLE_TAG = "medtune.role"
_PARENT_TAG = "mlflow.parentRunId"
HISTORY_KEYS = ("train_loss", "val_loss", "train_acc", "val_acc", "val_auc", "gap_acc", "gap_loss")


@dataclass
class SearchInfo:
    """One search (experiment): what its parent run or ``medtune_search.json`` says about it."""

    experiment: str
    space: str | None = None
    dataset: str | None = None
    task: str | None = None
    search: str | None = None
    parent_run_id: str | None = None
    location: str = ""
    finished: int = 0
    errored: int = 0
    unfinished: int = 0


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
            lines = _result_lines(Path(row["trial_dir"]))
            by_epoch: dict[int, dict[str, float]] = {}
            for line in lines:
                if "epoch" not in line:
                    continue
                values = {k: float(line[k]) for k in keys if _is_number(line.get(k))}
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
    """One row per finished trial (completed, or stopped early by ASHA) of the named experiment(s).

    ``source="mlflow"`` reads the MLflow experiment(s) (``tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else the sqlite store in ``storage``); ``source="tune"`` reads
    ``<storage>/<experiment>/`` only. Both give the same frame (see the module docstring).
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
        rows, searches, params, metrics = _from_mlflow(names, uri, Path(storage))
    else:
        uri = None
        rows, searches, params, metrics = _from_tune(names, Path(storage).expanduser().resolve())
    notes = []
    for info in searches:
        if info.errored or info.unfinished:
            notes.append(
                f"{info.experiment}: {info.finished} finished trials analyzed; left out "
                f"{info.errored} errored and {info.unfinished} unfinished (running or pending) trials."
            )
    empty = [info.experiment for info in searches if info.finished == 0]
    if len(empty) == len(searches):
        which = ", ".join(repr(n) for n in empty)
        raise ConfigError(
            f"experiment {which} has no finished trials yet ({_counts(searches)}); run or resume "
            "its search first, then analyze it."
        )
    for name in empty:
        notes.append(f"{name}: no finished trials; it adds nothing to this analysis.")
    frame = _assemble(rows, params, metrics)
    return LoadedSearch(frame, searches, source, params, metrics, uri, notes)


def load_test_scores(uri: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """A trial's per-sample test scores from its MLflow artifact URI: columns index, label (or
    label_0 .. label_{K-1} for multi-label tasks), score_0 .. score_{C-1}."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
    return pd.read_csv(local)


def infer_task(scores: pd.DataFrame) -> str:
    """binary, multiclass or multilabel, from a test-scores table's columns."""
    if any(c.startswith("label_") for c in scores.columns):
        return "multilabel"
    return "binary" if len([c for c in scores.columns if c.startswith("score_")]) == 2 else "multiclass"


# --------------------------------------------------------------------------------------------
# MLflow


def _from_mlflow(names: list[str], uri: str, storage: Path):
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        found = {name: client.get_experiment_by_name(name) for name in names}
    except Exception as error:  # mlflow raises many types for an unreachable store
        raise ConfigError(
            f"cannot reach the MLflow tracking store {uri!r} ({type(error).__name__}: {str(error)[:300]}). "
            "Start the server or fix --tracking-uri, or analyze the Tune folder alone with --offline."
        ) from error
    rows, searches, params, metrics = [], [], set(), set()
    for name, experiment in found.items():
        if experiment is None:
            offline = (storage / name / SEARCH_FILE).is_file()
            raise ConfigError(
                f"no MLflow experiment named {name!r} in {uri}. Check --experiment and --tracking-uri / "
                "--storage."
                + (
                    f" The Tune folder {storage / name} exists: --offline analyzes it without MLflow."
                    if offline
                    else ""
                )
            )
        info = SearchInfo(name, location=uri)
        parents = {}
        for run in _all_runs(client, experiment.experiment_id):
            tags = run.data.tags
            if tags.get(_ROLE_TAG) == "search":
                parents[run.info.run_id] = run
                continue
            if _TRIAL_ID_TAG not in tags:
                continue
            if run.info.status == "FAILED" or tags.get(_OUTCOME_TAG) == "errored":
                info.errored += 1
                continue
            if run.info.status != "FINISHED":
                info.unfinished += 1
                continue
            info.finished += 1
            config = {key: _typed(value) for key, value in run.data.params.items()}
            row = _row(name, tags[_TRIAL_ID_TAG], config, dict(run.data.metrics), params, metrics)
            row.update(
                run_name=run.info.run_name,
                parent_run_id=tags.get(_PARENT_TAG),
                outcome=tags.get(_OUTCOME_TAG),
                run_id=run.info.run_id,
                trial_dir=tags.get("medtune.trial_dir"),
                test_scores=(
                    f"{run.info.artifact_uri}/{tags[_TEST_SCORES_TAG]}" if _TEST_SCORES_TAG in tags else None
                ),
            )
            rows.append(row)
        if parents:
            parent = max(parents.values(), key=lambda run: run.info.start_time)
            p = parent.data.params
            info.parent_run_id = parent.info.run_id
            info.space, info.task, info.search = p.get("space"), p.get("task"), p.get("search")
            info.dataset = p.get("dataset")
        searches.append(info)
    return rows, searches, sorted(params), sorted(metrics)


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


# --------------------------------------------------------------------------------------------
# Tune folder


def _from_tune(names: list[str], storage: Path):
    from tuner import tracking

    rows, searches, params, metrics = [], [], set(), set()
    for name in names:
        folder = storage / name
        if not folder.is_dir():
            raise ConfigError(
                f"no Tune experiment folder {folder}. Check --experiment and --storage (the folder "
                "`medtune tune` wrote its trials to)."
            )
        info = SearchInfo(name, location=str(folder))
        search_file = folder / SEARCH_FILE
        trial_params: dict[str, Any] = {}
        if search_file.is_file():
            saved = json.loads(search_file.read_text())
            request = saved.get("request", {})
            # What the search logged with every trial's MLflow params (the data set's name as
            # tuner.data.load_dataset gave it): read, not re-derived from the request, so that both
            # sources name the data set alike whatever its kind (a .csv manifest's stem, say).
            trial_params = {key: _normal(value) for key, value in saved.get("trial_params", {}).items()}
            info.parent_run_id = saved.get("parent_run_id")
            info.space, info.search = request.get("space"), request.get("search")
            info.dataset = trial_params.get("dataset")
        states = _trial_states(folder)
        for trial_dir in sorted(p for p in folder.iterdir() if (p / "params.json").is_file()):
            lines = _result_lines(trial_dir)
            trial_id = next((str(line["trial_id"]) for line in lines if "trial_id" in line), None)
            trial_id = trial_id or trial_dir.name.split("-", 1)[0]
            status = states.get(trial_id) if states is not None else None
            if status is None:
                status = "TERMINATED" if lines and lines[-1].get("done") and states is None else "RUNNING"
            if status == "ERROR" or (trial_dir / "error.txt").is_file() and status != "TERMINATED":
                info.errored += 1
                continue
            if status != "TERMINATED":
                info.unfinished += 1
                continue
            info.finished += 1
            config = json.loads((trial_dir / "params.json").read_text())
            config = {**trial_params, **{key: _normal(value) for key, value in config.items()}}  # as MLflow's
            last: dict[str, float] = {}
            for line in lines:
                for key, value in line.items():
                    if _logged_by_mlflow(tracking, key) and _is_number(value) and math.isfinite(float(value)):
                        last[key] = float(value)
            row = _row(name, trial_id, config, last, params, metrics)
            scores = _newest_scores(trial_dir)
            row.update(
                run_name=tracking.trial_run_name(config),
                parent_run_id=info.parent_run_id,
                outcome=tracking.trial_outcome(config, lines[-1] if lines else {}),
                run_id=None,
                trial_dir=str(trial_dir),
                test_scores=str(scores) if scores else None,
            )
            rows.append(row)
            if info.task is None and scores:
                info.task = infer_task(pd.read_csv(scores, nrows=1))
        searches.append(info)
    return rows, searches, sorted(params), sorted(metrics)


def _logged_by_mlflow(tracking, key: str) -> bool:
    """Whether the MLflow logger keeps a reported key, by ``tuner.tracking``'s own rule (the search's
    run layout), so that the offline frame has the same metric columns as the MLflow one."""
    layout = tracking.SEARCH_RUNS
    return key in layout.metric_keys or key.startswith(tuple(layout.metric_prefixes))


def _trial_states(folder: Path) -> dict[str, str] | None:
    """trial id -> Tune status (TERMINATED, ERROR, RUNNING, PENDING, PAUSED) from the newest
    experiment state; None when Tune wrote none."""
    states = sorted(folder.glob("experiment_state-*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    if not states:
        return None
    data = json.loads(states[-1].read_text())
    result = {}
    for entry in data.get("trial_data", []):
        trial = json.loads(entry[0]) if isinstance(entry, list) else entry
        if isinstance(trial, dict) and "trial_id" in trial:
            result[str(trial["trial_id"])] = str(trial.get("status"))
    return result


def _result_lines(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return lines


def _newest_scores(trial_dir: Path) -> Path | None:
    for checkpoint in sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name, reverse=True):
        if (checkpoint / TEST_SCORES_FILE).is_file():
            return checkpoint / TEST_SCORES_FILE
        break  # only the newest checkpoint counts, as for MLflow (the trial's last checkpoint)
    return None


# --------------------------------------------------------------------------------------------
# one frame from either source


def _row(experiment: str, trial_id: str, config: dict, values: dict, params: set, metrics: set) -> dict:
    row: dict[str, Any] = {"experiment": experiment, "trial_id": trial_id}
    for key, value in config.items():
        row[key] = value
        params.add(key)
    for key, value in values.items():
        name = f"final_{key}" if key in config else key
        row[name] = float(value)
        metrics.add(name)
    row["epochs_trained"] = int(values.get("epoch", 0) or 0)
    return row


def _assemble(rows: list[dict], params: list[str], metrics: list[str]) -> pd.DataFrame:
    params = [p for p in params if p not in BOOKKEEPING_COLUMNS]
    metrics = [m for m in metrics if m not in params]
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
    frame = frame.sort_values(["experiment", "trial_id"], kind="stable").reset_index(drop=True)
    frame.attrs["param_columns"] = params
    frame.attrs["metric_columns"] = metrics
    return frame


def _typed(value: str) -> Any:
    """MLflow stores params as strings; give numbers, booleans, None, lists and dicts their types."""
    try:
        return _normal(ast.literal_eval(value))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return _normal(json.loads(value))
    except (ValueError, TypeError):
        return value


def _normal(value: Any) -> Any:
    """Lists and dicts as canonical JSON text, so that they group and compare like other values."""
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, sort_keys=True)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counts(searches: list[SearchInfo]) -> str:
    errored = sum(s.errored for s in searches)
    unfinished = sum(s.unfinished for s in searches)
    return f"{errored} errored, {unfinished} unfinished"


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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
