"""A real Ray Tune search with ASHA (3 trials per head: the quick space's arms), logged to a real MLflow
store, then analysed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import load_test_scores, load_trials
from analysis.report import AnalysisOptions, build_report
from tuner.search import SearchRequest, run_search

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_search(ray_local, small_npz, module_tmp_factory):
    storage = module_tmp_factory.mktemp("results")
    request = SearchRequest(space="quick", dataset=str(small_npz), num_samples=9, max_epochs=4,
                            search="optuna", storage=str(storage), experiment="asha-test", seed=3)
    return run_search(request), storage


def test_asha_stops_some_trials_early(finished_search):
    outcome, _ = finished_search
    assert outcome.trials == 9 and outcome.errored == 0
    assert outcome.trials_per_arm == {"head=linear": 3, "head=conv": 3, "head=convskip": 3}
    assert outcome.stopped_early >= 1, "ASHA stopped no trial"
    assert outcome.completed >= 1
    assert outcome.best is not None and 0.0 <= outcome.best["test_auc"] <= 1.0


def test_every_trial_is_a_nested_mlflow_run_with_curves_and_scores(finished_search, small_data):
    outcome, storage = finished_search
    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("asha-test")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = [r for r in runs if r.info.run_id == outcome.parent_run_id]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.parent_run_id]
    assert len(parent) == 1 and parent[0].data.params["space"] == "quick"
    assert len(children) == 9
    for run in children:
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert {"backbone", "weights", "head", "lr", "seed", "epochs", "strategy", "dataset"} <= set(params)
        assert run.info.run_name.startswith(f"resnet18-{params['head']}-ft-lr")
        history = client.get_metric_history(run.info.run_id, "val_auc")
        epochs_trained = int(run.data.metrics["epoch"])
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, epochs_trained + 1))
        expected_outcome = "completed" if epochs_trained == 4 else "stopped_early"
        assert run.data.tags["medtune.outcome"] == expected_outcome
        scores = load_test_scores(f"{run.info.artifact_uri}/test_scores.csv", outcome.tracking_uri)
        assert np.array_equal(scores["label"].to_numpy(), small_data.test.labels)
        from sklearn.metrics import roc_auc_score

        assert roc_auc_score(scores["label"], scores["score_1"]) == pytest.approx(run.data.metrics["test_auc"])


def test_load_trials_gives_one_typed_row_per_trial(finished_search):
    outcome, storage = finished_search
    frame = load_trials("asha-test", outcome.tracking_uri)
    assert len(frame) == 9
    assert frame["lr"].dtype == float and frame["seed"].dtype.kind == "i"
    assert np.allclose(frame["log10_lr"], np.log10(frame["lr"]))
    assert set(frame["outcome"]) <= {"completed", "stopped_early"}
    assert frame["test_scores"].notna().all()


def test_report_is_written_and_logged_to_the_parent_run(finished_search, tmp_path):
    outcome, storage = finished_search
    # ASHA stopped some trials: pooled here (--include-stopped), so every head is compared whatever ASHA did
    markdown = build_report("asha-test", tracking_uri=outcome.tracking_uri, out=tmp_path / "report",
                            options=AnalysisOptions(include_stopped=True)).markdown_path
    text = markdown.read_text()
    for section in ("## 1. Overview", "## 2. Mixed model (exploratory)", "## 3. Does each factor matter?",
                    "## 4. DeLong comparisons", "## 7. Effect plots", "## 8. Learning curves and overfitting",
                    "## 12. Optuna studies", "## 13. Hyperparameter importance"):
        assert section in text
    delong = pd.read_csv(tmp_path / "report" / "delong.csv")
    heads = {"linear", "conv", "convskip"}
    assert set(delong["factor"]) == {"head"} and set(delong["level"]) | set(delong["reference"]) <= heads
    assert delong["p_value"].between(0, 1).all() and (delong["p_holm"] >= delong["p_value"]).all()
    assert delong["p_holm"].between(0, 1).all() and delong["paired"].all()
    model = pd.read_csv(tmp_path / "report" / "mixed_model.csv")
    assert list(model.columns)[:7] == ["term", "estimate", "se", "z", "p", "ci_low", "ci_high"]
    assert (tmp_path / "report" / "test_auc_by_lr.png").stat().st_size > 1000
    assert "data:image/png;base64," in (tmp_path / "report" / "report.html").read_text()
    logged = {a.path for a in MlflowClient(outcome.tracking_uri).list_artifacts(outcome.parent_run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/delong.csv",
            "report/test_auc_by_lr.png"} <= logged


def test_trials_share_the_decoded_images_through_the_object_store(ray_local, small_data, tmp_path):
    """Decode once: each trial gets zero-copy, read-only views of the arrays the driver put in Ray's
    object store (a private copy would be writeable)."""
    from ray import tune

    def probe(config, data):
        tune.report({"writeable": int(data.train.images.flags.writeable),
                     "owns_data": int(data.train.images.flags.owndata)})

    results = tune.Tuner(tune.with_parameters(probe, data=small_data),
                         tune_config=tune.TuneConfig(num_samples=2),
                         run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert [r.metrics["writeable"] for r in results] == [0, 0]
    assert [r.metrics["owns_data"] for r in results] == [0, 0]


def test_patient_regex_reaches_the_data_loader(small_npz, tmp_path, capsys):
    """``--patient-regex`` goes to ``load_dataset`` from ``tune`` and ``train``: it applies to image folders
    only, and the loader's refusal for an .npz shows it arrived."""
    from tuner.cli import main
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError, match="--patient-regex .*P.* applies to image folders only"):
        run_search(SearchRequest(space="quick", dataset=str(small_npz), storage=str(tmp_path),
                                 patient_regex=r"^(P\d+)_"))
    assert main(["train", "--space", "quick", "--dataset", str(small_npz), "--patient-regex", "^(P\\d+)_",
                 "--out", str(tmp_path / "train")]) == 2
    assert "applies to image folders only" in capsys.readouterr().err


def test_a_trial_worker_imports_neither_mlflow_nor_optuna():
    """Ray pickles the trainable by reference, so a worker imports the module that defines it: the one
    the search and the confirmation stage hand to Tune must not pull in the driver's tracking and
    searcher code (benchmarks/memory.py measures what it saves)."""
    from tuner import confirm, search

    assert search.tune_trial is confirm.tune_trial
    module = search.tune_trial.__module__
    driver_only = ("mlflow", "optuna", "sqlalchemy", "tuner.search", "tuner.tracking", "tuner.optuna_study")
    code = f"import sys, {module}; print(sorted(name for name in {driver_only!r} if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", (module, done.stdout)
