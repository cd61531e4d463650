"""Trials from Tune experiment folders alone (offline): a search's ``<storage>/<experiment>/`` and, when
it was run, its confirmation stage's ``<storage>/<experiment>-confirm/`` (``tuner.schema
.confirm_experiment``), each with its own ``SEARCH_FILE`` saying its stage.

From each trial folder: ``params.json`` (its config), ``result.json`` (one line per epoch) and the newest
``checkpoint_NNNNNN/test_scores.csv``; trial states from Tune's ``experiment_state-*.json``; from the
``SEARCH_FILE`` the params the search logged with every trial beside its config (``trial_params``: the
data set's name), read as recorded, never re-derived.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.records import Collected, SearchInfo, identity, is_number, normal, parsed, stage_of
from tuner.errors import ConfigError
from tuner.schema import CONFIRM, SEARCH_FILE, TEST_SCORES_FILE, confirm_experiment, trial_outcome


def read_tune(names: list[str], storage: Path) -> Collected:
    """Every finished trial of the named searches and of their confirmation stages."""
    from tuner import tracking  # the run layout's metric rule and run names, as MLflow has them

    collected = Collected()
    for name in names:
        folder = storage / name
        if not folder.is_dir():
            raise ConfigError(
                f"no Tune experiment folder {folder}. Check --experiment and --storage (the folder "
                "`medtune tune` wrote its trials to)."
            )
        info = SearchInfo(name, location=str(folder))
        _read_folder(folder, info, collected, tracking)
        confirm = storage / confirm_experiment(name)
        if (confirm / SEARCH_FILE).is_file():
            info.confirm_location = str(confirm)
            _read_folder(confirm, info, collected, tracking)
        collected.searches.append(info)
    return collected


def _read_folder(folder: Path, info: SearchInfo, collected: Collected, tracking) -> None:
    search_file = folder / SEARCH_FILE
    trial_params: dict[str, Any] = {}
    stage = stage_of(None)
    if search_file.is_file():
        saved = json.loads(search_file.read_text())
        stage = stage_of(saved.get("stage"))
        trial_params = {key: normal(value) for key, value in saved.get("trial_params", {}).items()}
        if stage != CONFIRM or info.parent_run_id is None:
            request = saved.get("request", {})
            info.parent_run_id = info.parent_run_id or saved.get("parent_run_id")
            info.space = info.space or request.get("space")
            info.search = info.search or request.get("search")
            info.dataset = info.dataset or trial_params.get("dataset")
            info.optuna_storage = info.optuna_storage or saved.get("optuna_storage")
    states = _trial_states(folder)
    for trial_dir in sorted(p for p in folder.iterdir() if (p / "params.json").is_file()):
        lines = result_lines(trial_dir)
        trial_id = next((str(line["trial_id"]) for line in lines if "trial_id" in line), None)
        trial_id = trial_id or trial_dir.name.split("-", 1)[0]
        status = states.get(trial_id) if states is not None else None
        if status is None:
            status = "TERMINATED" if lines and lines[-1].get("done") and states is None else "RUNNING"
        if status == "ERROR" or (trial_dir / "error.txt").is_file() and status != "TERMINATED":
            info.add(stage, "errored")
            continue
        if status != "TERMINATED":
            info.add(stage, "unfinished")
            continue
        info.add(stage, "finished")
        raw = json.loads((trial_dir / "params.json").read_text())
        # the preprocessing the trial reported (``preprocess_*``), which the MLflow logger logs as params too
        reported = {key: normal(parsed(str(value))) for key, value in (lines[-1] if lines else {}).items()
                    if key.startswith("preprocess_")}
        config = {**trial_params, **{key: normal(value) for key, value in raw.items()}, **reported}  # as MLflow's
        last: dict[str, float] = {}
        for line in lines:
            for key, value in line.items():
                if _logged_by_mlflow(tracking, key) and is_number(value) and math.isfinite(float(value)):
                    last[key] = float(value)
        row = collected.row(info.experiment, trial_id, config, last)
        scores = _newest_scores(trial_dir)
        row.update(
            stage=stage,
            config_id=identity(raw),
            run_name=tracking.trial_run_name(config),
            parent_run_id=info.parent_run_id,
            outcome=trial_outcome(config, lines[-1] if lines else {}),
            run_id=None,
            trial_dir=str(trial_dir),
            test_scores=str(scores) if scores else None,
        )
        if info.task is None and scores:
            info.task = infer_task(pd.read_csv(scores, nrows=1))


def infer_task(scores: pd.DataFrame) -> str:
    """binary, multiclass or multilabel, from a test-scores table's columns."""
    if any(c.startswith("label_") for c in scores.columns):
        return "multilabel"
    return "binary" if len([c for c in scores.columns if c.startswith("score_")]) == 2 else "multiclass"


def result_lines(trial_dir: Path) -> list[dict[str, Any]]:
    """Tune's per-report results of one trial; a line cut short by a crash is skipped."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


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


def _newest_scores(trial_dir: Path) -> Path | None:
    for checkpoint in sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name, reverse=True):
        if (checkpoint / TEST_SCORES_FILE).is_file():
            return checkpoint / TEST_SCORES_FILE
        break  # only the newest checkpoint counts, as for MLflow (the trial's last checkpoint)
    return None
