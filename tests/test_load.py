"""Load (benchmarks/load.py): a search of many very short trials, then two such searches at once into
the same default store (SQLite in --storage), all through real Ray Tune and MLflow. Every Tune trial
is in MLflow exactly once, FINISHED, with its metrics. The short form runs by default; the 200-trial
form is marked long."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuner.schema import SEARCH_FILE, TRIAL_ID_TAG
from tuner.tracking import open_experiment

REPO = Path(__file__).resolve().parents[1]


def _run_load(storage: Path, options: list[str], timeout: float) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load.py"), *options, "--storage", str(storage)],
                          capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _assert_exactly_once(storage: Path, experiment: str, trials: int) -> None:
    """Read back independently of the benchmark: Tune's trials and MLflow's child runs match one to one."""
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=5000)
    search_file = json.loads((storage / experiment / SEARCH_FILE).read_text())
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search_file["parent_run_id"]]
    tune_ids = {json.loads(f.read_text().splitlines()[0])["trial_id"]
                for f in (storage / experiment).glob("*/result.json") if f.read_text().strip()}
    logged = [r.data.tags[TRIAL_ID_TAG] for r in children]
    assert len(tune_ids) == trials
    assert sorted(logged) == sorted(tune_ids)  # each Tune trial once: none missing, none twice
    for run in children:
        assert run.info.status == "FINISHED"
        assert 0.0 <= run.data.metrics["val_auc"] <= 1.0 and 0.0 <= run.data.metrics["test_auc"] <= 1.0
        assert len(client.get_metric_history(run.info.run_id, "val_auc")) == 1  # 1 epoch, logged once


def test_short_load_every_trial_in_mlflow_exactly_once(tmp_path):
    """The benchmark's short form (tests/test_benchmarks.py leaves it to this test, which also reads the
    stores back): its figures, then MLflow against Tune's trials."""
    stdout = _run_load(tmp_path, ["--short"], timeout=900)
    assert "FIGURE load.exactly_once.single = yes" in stdout
    assert "FIGURE load.exactly_once.two_at_once = yes" in stdout
    for name in ("load.trials_per_minute.single", "load.driver_rss_growth_mib_per_100_trials"):
        assert re.search(rf"^FIGURE {re.escape(name)} = -?[0-9.]+ \|", stdout, re.MULTILINE), (name, stdout[-2000:])
    _assert_exactly_once(tmp_path, "single", 6)
    for name in ("pair-0", "pair-1"):  # the two searches that ran at once into one mlflow.db
        _assert_exactly_once(tmp_path, name, 3)


@pytest.mark.long
def test_200_trial_search_and_two_at_once(tmp_path):
    stdout = _run_load(tmp_path, ["--trials", "200", "--pair", "200"], timeout=7200)
    assert "FIGURE load.exactly_once.single = yes" in stdout
    assert "FIGURE load.exactly_once.two_at_once = yes" in stdout
    _assert_exactly_once(tmp_path, "single", 200)
    for name in ("pair-0", "pair-1"):
        _assert_exactly_once(tmp_path, name, 200)


def _open_together(uri: str, start: multiprocessing.synchronize.Barrier, outcomes: multiprocessing.Queue) -> None:
    start.wait()
    try:
        open_experiment(uri, "together", None)
        outcomes.put("ok")
    except Exception as error:  # what a crashed driver would have raised
        outcomes.put(f"{type(error).__name__}: {str(error)[:200]}")


def test_searches_started_together_into_a_fresh_store_all_open_it(tmp_path):
    """MLflow creates and migrates a new SQLite store on first use; four drivers doing so at the same
    instant (released by one barrier) used to break each other ("table ... already exists"). Each now
    opens it, and the store holds one experiment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    start, outcomes = context.Barrier(4), context.Queue()
    drivers = [context.Process(target=_open_together, args=(uri, start, outcomes)) for _ in range(4)]
    for driver in drivers:
        driver.start()
    results = [outcomes.get(timeout=300) for _ in drivers]
    for driver in drivers:
        driver.join(timeout=60)
    assert results == ["ok"] * 4
    assert [e.name for e in MlflowClient(uri).search_experiments() if e.name == "together"] == ["together"]
