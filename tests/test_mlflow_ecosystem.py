"""A real tiny search (Ray Tune, a local MLflow store, real BreastMNIST images), run through `medtune tune
--register`, and what an MLflow user finds after it: each trial's dataset input, the best model logged on
the parent run and registered (loaded back, it reproduces the trial's test AUC on raw test images), the
parent run's optimization history, the experiment's kind, the runs page printed, and each trial's cost
recorded and totalled by the report."""

from __future__ import annotations

import contextlib
import io
import json
import os
from types import SimpleNamespace

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from analysis.loading import load_search
from analysis.report import AnalysisOptions, analyze
from analysis.sections import cost
from tuner.cli import main
from tuner.model_export import BEST_MODEL_NAME, MODEL_TRIAL_TAG, MODEL_URI_TAG, confirmed_best
from tuner.schema import TRIAL_ID_TAG
from tuner.search_summary import best_result
from tuner.tracking import (
    DATASET_CONTEXT,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FINISHED_TRIALS_METRIC,
    dataset_record,
)
from tuner.training.cost import TrialCost

EXPERIMENT = "eco"
REGISTERED = "medtune-eco"


@pytest.fixture(autouse=True)
def _restore_tracking_uri():
    """These tests point MLflow's fluent API at the search's store; ``mlflow.set_tracking_uri`` also sets
    ``$MLFLOW_TRACKING_URI``, which later tests would otherwise resolve."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def search(ray_local, small_npz, module_tmp_factory):
    """Three trials (one per head: the quick space's arms), one epoch each, resnet18 at 28 px."""
    storage = module_tmp_factory.mktemp("eco")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["tune", "--space", "quick", "--dataset", str(small_npz), "--num-samples", "3",
                       "--max-epochs", "1", "--set", "lr=0.05",
                       "--storage", str(storage), "--experiment", EXPERIMENT, "--seed", "1",
                       "--register", REGISTERED])
    assert status == 0, out.getvalue()
    saved = json.loads((storage / EXPERIMENT / "medtune_search.json").read_text())
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = next(r for r in runs if r.info.run_id == saved["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {"uri": uri, "client": client, "experiment": experiment, "parent": parent, "children": children,
            "stdout": out.getvalue(), "storage": storage}


def test_each_trial_records_its_data_set_as_an_mlflow_dataset_input(search, small_data, small_npz):
    expected = dataset_record(small_data, str(small_npz.resolve()))
    assert len(search["children"]) == 3
    for run in search["children"]:
        (logged,) = run.inputs.dataset_inputs
        dataset = logged.dataset
        assert (dataset.name, dataset.digest) == ("breastsmall", expected["digest"])
        assert json.loads(dataset.source) == {"uri": str(small_npz.resolve())}
        profile = json.loads(dataset.profile)
        assert (profile["train_size"], profile["val_size"], profile["test_size"]) == (96, 40, 40)
        assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == DATASET_CONTEXT
    # the runs table's dataset filter finds them
    found = search["client"].search_runs([search["experiment"].experiment_id],
                                         filter_string="dataset.name = 'breastsmall'")
    assert {r.info.run_id for r in found} == {r.info.run_id for r in search["children"]}



def test_a_best_trial_without_its_weights_is_reported_as_such_not_as_a_store_failure(search, small_data, tmp_path,
                                                                                        capsys):
    """A best trial whose checkpoints kept no ``best_model.pt`` (stopped after a scores-only checkpoint):
    the search goes on, no model is recorded, and the line says why in terms of ``medtune tune``."""
    import shutil

    from tuner.model_export import log_search_model
    from tuner.search_summary import SearchOutcome

    (trial_dir,) = [p.parent for p in (search["storage"] / EXPERIMENT).glob("*/params.json")][:1]
    copy = shutil.copytree(trial_dir, tmp_path / trial_dir.name)
    for weights in copy.glob("checkpoint_*/best_model.pt"):
        weights.unlink()
    outcome = SearchOutcome(EXPERIMENT, search["storage"] / EXPERIMENT, search["uri"], search["parent"].info.run_id,
                            1, 1, 0, 0, {"trial_id": "t"}, best_trial_dir=copy)
    log_search_model(outcome, small_data)
    err = capsys.readouterr().err
    assert outcome.model_uri is None
    assert "the model 'best_model' was not logged" in err and "--checkpoint-every 1" in err
    assert "to MLflow" not in err

def test_the_digest_tells_different_arrays_apart(small_data, small_npz):
    from dataclasses import replace

    flipped = replace(small_data, test=replace(small_data.test, labels=1 - small_data.test.labels))
    assert dataset_record(flipped, "x")["digest"] != dataset_record(small_data, "x")["digest"]
    assert dataset_record(small_data, "y")["digest"] == dataset_record(small_data, "x")["digest"]


def test_the_best_model_loaded_from_mlflow_reproduces_the_trials_test_auc(search, small_data):
    parent, children = search["parent"], search["children"]
    (best,) = [r for r in children if r.data.tags[TRIAL_ID_TAG] == parent.data.tags[MODEL_TRIAL_TAG]]
    assert best.data.metrics["best_score"] == max(r.data.metrics["best_score"] for r in children)  # by validation
    uri = parent.data.tags[MODEL_URI_TAG]
    mlflow.set_tracking_uri(search["uri"])
    model = mlflow.pytorch.load_model(uri)
    raw = torch.from_numpy(np.ascontiguousarray(small_data.test.images))  # uint8 (N, 28, 28), as the data hold them
    probs = model(raw).numpy()
    assert probs.shape == (len(small_data.test), 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert roc_auc_score(small_data.test.labels, probs[:, 1]) == pytest.approx(best.data.metrics["test_auc"], abs=1e-9)
    # pyfunc, through the signature: the same probabilities
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert np.allclose(pyfunc.predict(np.ascontiguousarray(small_data.test.images)), probs, atol=1e-6)
    info = mlflow.models.get_model_info(uri)
    (images,) = info.signature.inputs.inputs
    assert images.type == np.dtype(np.uint8) and images.shape == (-1, -1, -1)
    assert info.signature.outputs.inputs[0].shape == (-1, 2)
    assert info.saved_input_example_info is not None
    assert info.name == BEST_MODEL_NAME and info.run_id == parent.info.run_id


def test_register_makes_it_a_registered_model_version(search):
    versions = search["client"].search_model_versions(f"name = '{REGISTERED}'")
    assert len(versions) == 1
    assert versions[0].run_id == search["parent"].info.run_id
    assert search["parent"].data.tags[MODEL_URI_TAG] in versions[0].source  # models:/<id> of the logged model
    assert f"registered: {REGISTERED} version 1" in search["stdout"]


def test_the_parent_run_charts_the_best_so_far_one_step_per_finished_trial(search):
    client, parent, children = search["client"], search["parent"], search["children"]
    finished = sorted(client.get_metric_history(parent.info.run_id, FINISHED_TRIALS_METRIC), key=lambda m: m.step)
    assert [(m.step, m.value) for m in finished] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    best = sorted(client.get_metric_history(parent.info.run_id, "search_best_score"), key=lambda m: m.step)
    values = [m.value for m in best]
    assert [m.step for m in best] == [1, 2, 3] and values == sorted(values)
    assert values[-1] == pytest.approx(max(r.data.metrics["best_score"] for r in children))
    assert {r.data.metrics["best_score"] for r in children} >= {values[0]}  # step 1 is the first trial's own
    val_auc = client.get_metric_history(parent.info.run_id, "search_best_val_auc")
    assert len(val_auc) == 3


def test_the_experiment_opens_on_its_runs_and_the_runs_page_is_printed(search):
    experiment = search["experiment"]
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    stdout = search["stdout"]
    assert f"mlflow ui --backend-store-uri {search['uri']} --port 5000" in stdout
    page = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert page in stdout


def test_every_trial_records_its_cost_and_the_report_totals_it_per_arm(search, tmp_path):
    for run in search["children"]:
        metrics = run.data.metrics
        assert metrics["cost_wall_s"] > 0 and metrics["cost_cpu_s"] > 0
        assert metrics["cost_gpu_s"] == 0.0  # --gpus-per-trial 0
    loaded = load_search(EXPERIMENT, search["uri"], search["storage"])
    report = analyze(loaded, tmp_path, AnalysisOptions(), sections=(cost.UNIT,))
    assert "Cost" in report.markdown_path.read_text()
    totals = pd.read_csv(tmp_path / "cost.csv").set_index("stage")
    children = search["children"]
    for column, metric in (("wall_s", "cost_wall_s"), ("cpu_s", "cost_cpu_s"), ("gpu_s", "cost_gpu_s")):
        assert totals.loc["all", column] == pytest.approx(sum(r.data.metrics[metric] for r in children))
    assert totals.loc["all", "trials"] == 3
    by_level = pd.read_csv(tmp_path / "cost_by_level.csv")
    assert set(by_level["factor"]) == {"head"}
    assert set(by_level["level"]) == {"linear", "conv", "convskip"}
    for row in by_level.itertuples():
        runs = [r for r in children if r.data.params["head"] == row.level]
        assert row.wall_s == pytest.approx(sum(r.data.metrics["cost_wall_s"] for r in runs))
    assert by_level["wall_share"].sum() == pytest.approx(1.0)


def test_a_confirmation_stage_logs_and_registers_the_confirmed_best(search, small_data):
    """Runs last: it re-points the parent's model tags at the confirmed model."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["confirm", "--experiment", EXPERIMENT, "--storage", str(search["storage"]), "--top-k", "1",
                       "--seeds", "1", "--register", REGISTERED])
    assert status == 0, out.getvalue()
    client, parent_id = search["client"], search["parent"].info.run_id
    parent = client.get_run(parent_id)
    confirm_runs = client.search_runs([search["experiment"].experiment_id],
                                      filter_string=f"tags.`medtune.stage` = 'confirm' and "
                                                    f"tags.`mlflow.parentRunId` = '{parent_id}'")
    (replicate,) = confirm_runs
    assert parent.data.tags[MODEL_TRIAL_TAG] == replicate.data.tags[TRIAL_ID_TAG]
    assert replicate.inputs.dataset_inputs[0].dataset.name == "breastsmall"  # the stage's runs record it too
    mlflow.set_tracking_uri(search["uri"])
    model = mlflow.pytorch.load_model(parent.data.tags[MODEL_URI_TAG])
    probs = model(torch.from_numpy(np.ascontiguousarray(small_data.test.images))).numpy()
    assert roc_auc_score(small_data.test.labels, probs[:, 1]) == pytest.approx(replicate.data.metrics["test_auc"],
                                                                               abs=1e-9)
    versions = client.search_model_versions(f"name = '{REGISTERED}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert f"registered: {REGISTERED} version 2" in out.getvalue()
    # confirmation runs add no step to the search's optimization history
    assert len(client.get_metric_history(parent_id, FINISHED_TRIALS_METRIC)) == 3


def test_gpu_seconds_are_the_fraction_times_wall_time_and_survive_a_resume(tmp_path):
    cost = TrialCost(gpus=0.25)
    first = cost.checkpoint(tmp_path)
    assert first["cost_gpu_s"] == pytest.approx(0.25 * first["cost_wall_s"]) and first["cost_gpu_s"] > 0
    resumed = TrialCost(gpus=0.25)
    resumed.resume(tmp_path)
    later = resumed.metrics()
    assert later["cost_wall_s"] >= first["cost_wall_s"] and later["cost_cpu_s"] >= first["cost_cpu_s"]
    assert later["cost_gpu_s"] == pytest.approx(0.25 * later["cost_wall_s"])


GPU_SEARCH = """
import json, sys
import ray
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
from tuner.search import SearchRequest, run_search
outcome = run_search(SearchRequest(space="quick", dataset=sys.argv[1], num_samples=3, max_epochs=2,
                                   storage=sys.argv[2], experiment="gpu", gpus_per_trial=0.5, seed=1))
from mlflow.tracking import MlflowClient
client = MlflowClient(outcome.tracking_uri)
runs = client.search_runs([outcome.experiment_id], filter_string="tags.`mlflow.parentRunId` = '%s'"
                          % outcome.parent_run_id)
print("COSTS " + json.dumps([{k: v for k, v in r.data.metrics.items() if k.startswith("cost_")} for r in runs]))
"""


@pytest.mark.slow  # its own Ray with a declared GPU, in a subprocess (about a minute); short form: the test above
def test_a_trial_given_half_a_gpu_records_half_its_wall_time_as_gpu_seconds(small_npz, tmp_path):
    """Ray assigns the fraction (here of a GPU declared to Ray: the trials still train on the CPU), and
    the trial records fraction x wall time, summed over its epochs' running totals."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", GPU_SEARCH, str(small_npz), str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("COSTS ")), None)
    assert line is not None, done.stderr[-3000:]
    costs = json.loads(line.removeprefix("COSTS "))
    assert len(costs) == 3
    for metrics in costs:
        assert metrics["cost_gpu_s"] > 0 and metrics["cost_cpu_s"] > 0
        assert metrics["cost_gpu_s"] == pytest.approx(0.5 * metrics["cost_wall_s"])


QUICK = {"backbone": "resnet18_small", "head": "linear", "epochs": 3}


def _result(lr: float, seed: int, best_score: float, epoch: int = 3, error: Exception | None = None):
    """A Tune ``Result`` as the model choice reads it: config, last metrics, error."""
    return SimpleNamespace(config={**QUICK, "lr": lr, "seed": seed}, error=error, path=f"/t/{lr}-{seed}",
                           metrics={"best_score": best_score, "epoch": epoch, "trial_id": f"{lr}-{seed}"})


def test_the_confirmed_model_comes_from_a_configuration_whose_replicates_all_completed():
    """A configuration that lost a replicate is not judged on its survivors' mean: its one good seed
    (0.99) would beat a configuration whose three seeds all completed (0.90)."""
    lost_one = [_result(0.01, 0, 0.99), _result(0.01, 1, 0.98), _result(0.01, 2, 0.5, error=RuntimeError("boom"))]
    complete = [_result(0.1, s, 0.90) for s in range(3)]
    chosen = confirmed_best([*lost_one, *complete])
    assert chosen.config["lr"] == 0.1
    assert confirmed_best(lost_one) is None  # nothing completed all its replicates


def test_the_search_answer_is_the_best_trial_that_ran_its_full_budget():
    """A trial ASHA stopped after one epoch with a higher validation score is not the search's answer:
    it was judged on fewer epochs than the full-budget trials."""
    stopped, full = _result(0.01, 0, 0.99, epoch=1), _result(0.1, 0, 0.9)
    grid = type("Grid", (list,), {"get_best_result": lambda self, **_: stopped})([stopped, full])
    assert best_result(grid) is full
    assert best_result(type(grid)([stopped])) is stopped  # nobody ran the budget: the best by validation anyway
