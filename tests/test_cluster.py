"""A real cluster on this machine: two Ray nodes (each its own --temp-dir) advertising GPUs the machine
does not have, an MLflow server on PostgreSQL, and searches submitted with `ray job submit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.services import REPO, MlflowServer, PostgresServer, RayCluster, ray_env, stop_group, wait_for
from tuner.tracking import read_results

pytestmark = pytest.mark.cluster
SECRET = "s3cr3t-never-logged"


@pytest.fixture
def mlflow_on_postgres(tmp_path):
    postgres = PostgresServer(tmp_path)
    server = MlflowServer(postgres.start(), tmp_path / "artifacts", tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()
        postgres.stop()


@pytest.fixture
def cluster(tmp_path):
    ray = RayCluster(tmp_path)
    try:
        yield ray
    finally:
        ray.stop()


def _trial_results(experiment_dir: Path) -> dict[str, list[dict]]:
    return {d.name: read_results(d) for d in experiment_dir.iterdir() if (d / "result.json").is_file()}


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def test_job_submit_packs_quarter_gpu_trials_on_two_nodes(cluster, mlflow_on_postgres, tmp_path):
    cluster.start_head(cpus=4, gpus=1)
    cluster.start_worker("worker", cpus=4, gpus=1)
    storage = tmp_path / "shared-storage"
    tracking = mlflow_on_postgres.replace("http://", f"http://medtune:{SECRET}@")
    runtime_env = {"excludes": ["/.git", "/.venv", "/results", "/data", "*.egg-info", "__pycache__"],
                   "env_vars": {"MEDTUNE_DATA_ROOT": os.environ["MEDTUNE_DATA_ROOT"],
                                "MLFLOW_TRACKING_PASSWORD": SECRET,
                                # Tune keeps one trial pending at a time under a searcher: let it fill the
                                # cluster at once instead of one trial per scheduling step.
                                "TUNE_MAX_PENDING_TRIALS_PG": "8",
                                # A finished head trial's process must not take over a trial that Ray
                                # placed on the (slower to start) worker node.
                                "MEDTUNE_REUSE_ACTORS": "0"}}
    done = cluster.submit(
        ["--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "-m", "tuner", "tune", "--space", "quick", "--set", "head=conv", "--dataset", "breastmnist",
         "--num-samples", "8", "--max-epochs", "3", "--grace-period", "3", "--gpus-per-trial", "0.25",
         "--cpus-per-trial", "0.5", "--storage", str(storage), "--experiment", "cluster",
         "--tracking-uri", tracking], timeout_s=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = _trial_results(storage / "cluster")
    assert len(results) == 8
    nodes = {lines[-1]["node_id"] for lines in results.values()}
    assert len(nodes) == 2, "trials did not run on both nodes"
    by_device: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for lines in results.values():
        devices = {line["cuda_visible_devices"] for line in lines}
        assert len(devices) == 1 and len(devices.pop().split(",")) == 1, "a trial saw more than its own GPU"
        first, last = lines[0], lines[-1]
        by_device[(last["node_id"], last["cuda_visible_devices"])].append(
            (first["timestamp"] - first["time_total_s"], last["timestamp"]))
    assert max(_max_overlap(spans) for spans in by_device.values()) >= 4, "no GPU held four trials at once"

    client = MlflowClient(mlflow_on_postgres)
    experiment = client.get_experiment_by_name("cluster")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if "medtune.trial_id" in r.data.tags]
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert all(client.get_metric_history(r.info.run_id, "val_auc") for r in children)
    assert {r.data.tags["medtune.cuda_visible_devices"] for r in children} == {"0"}
    for run in runs:  # no secret in any param or tag
        assert SECRET not in json.dumps({**run.data.params, **run.data.tags})


def test_worker_node_killed_mid_trial_is_retried_from_its_checkpoint(cluster, small_npz, tmp_path):
    max_epochs = 16  # an epoch here takes under a second: enough of them that the kill lands mid-trial
    cluster.start_head(cpus=1, gpus=0)
    worker_id = cluster.start_worker("worker", cpus=1, gpus=0)
    storage = tmp_path / "storage"
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115
    driver = subprocess.Popen(
        [sys.executable, "-m", "tuner", "tune", "--space", "quick", "--set", "head=linear", "--dataset", str(small_npz),
         "--num-samples",
         "2", "--max-epochs", str(max_epochs), "--grace-period", str(max_epochs), "--cpus-per-trial", "1", "--storage",
         str(storage), "--experiment", "failover", "--checkpoint-every", "1"],  # resumable after any epoch
        # Without actor reuse the head's freed actor cannot take the trial Ray placed on the (slower) worker.
        env={**ray_env(), "RAY_ADDRESS": cluster.address, "MEDTUNE_REUSE_ACTORS": "0"}, cwd=REPO, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def worker_trial_progressed():
            if not (storage / "failover").is_dir():
                return None
            for name, lines in _trial_results(storage / "failover").items():
                if len(lines) >= 2 and lines[-1]["node_id"] == worker_id:
                    return name
            return None

        trial = wait_for(worker_trial_progressed, 300, "a trial on the worker node to report two epochs")
        cluster.kill("worker")
        assert driver.wait(timeout=540) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            stop_group(driver)
        log.close()

    lines = read_results(storage / "failover" / trial)
    epochs = [line["epoch"] for line in lines]
    on_worker = [line["epoch"] for line in lines if line["node_id"] == worker_id]
    after = [line["epoch"] for line in lines if line["node_id"] != worker_id]
    assert epochs[-1] == max_epochs and on_worker and after, epochs
    assert 1 < after[0] <= on_worker[-1] + 1, f"not resumed from its checkpoint: {epochs}"
    from ray.tune import ExperimentAnalysis

    restored = {t.trial_id: t for t in ExperimentAnalysis(str(storage / "failover")).trials}
    assert restored[trial.split("-")[0]].num_failures >= 1
    assert all(t.status == "TERMINATED" for t in restored.values())
