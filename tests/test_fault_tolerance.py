"""Nothing a user ran is lost: a killed driver, a dead tracking server, a diverging trial; and bad
cluster settings fail in seconds."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.services import REPO, MlflowServer, free_port, stop_group, wait_for
from tuner.errors import ConfigError
from tuner.search import SearchRequest, run_search
from tuner.tracking import read_results, redact, resolve_tracking_uri, runs_page


def _driver(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner", "tune", *args], cwd=REPO, stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _children(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r for r in client.search_runs([found.experiment_id], max_results=500) if "medtune.trial_id" in r.data.tags]


@pytest.mark.cluster
def test_killed_driver_resumes_and_keeps_finished_trials(small_npz, tmp_path):
    storage = tmp_path / "storage"
    args = ["--space", "quick", "--dataset", str(small_npz), "--num-samples", "6", "--max-epochs", "3",
            "--grace-period", "3", "--search", "random", "--storage", str(storage), "--experiment", "resume"]
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    driver = _driver(args, tmp_path / "first.log")
    try:
        wait_for(lambda: storage.joinpath("mlflow.db").is_file() and sum(
            r.info.status == "FINISHED" for r in _children(client, "resume")) >= 2, 400, "two finished trials")
        time.sleep(2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            stop_group(driver, signal.SIGKILL)
    finished = {r.data.tags["medtune.trial_id"] for r in _children(client, "resume") if r.info.status == "FINISHED"}
    before = {d.name.split("-")[0]: (d / "result.json").read_text() for d in (storage / "resume").iterdir()
              if (d / "result.json").is_file()}
    assert finished and finished <= set(before)

    resumed = subprocess.run([sys.executable, "-m", "tuner", "tune", *args, "--resume"], cwd=REPO,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = {d.name.split("-")[0]: (d / "result.json").read_text() for d in (storage / "resume").iterdir()
             if (d / "result.json").is_file()}
    assert len(after) == 6
    for trial_id in finished:  # kept, not re-run
        assert after[trial_id] == before[trial_id]
    children = _children(client, "resume")
    assert len(children) == 6 and len({r.data.tags["medtune.trial_id"] for r in children}) == 6
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(len(client.get_metric_history(r.info.run_id, "epoch")) == 3 for r in children)


@pytest.mark.cluster
def test_tracking_server_outage_loses_nothing_after_sync(small_npz, tmp_path):
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    server = MlflowServer(backend, tmp_path / "artifacts", tmp_path)
    uri = server.start()
    storage = tmp_path / "storage"
    # one arm (head=linear), so 4 trials split equally
    driver = _driver(["--space", "quick", "--set", "head=linear", "--dataset", str(small_npz), "--num-samples", "4",
                      "--max-epochs", "3",
                      "--grace-period", "3", "--storage", str(storage), "--experiment", "outage",
                      "--tracking-uri", uri], tmp_path / "driver.log")
    try:
        client = MlflowClient(uri)
        wait_for(lambda: any(client.get_metric_history(r.info.run_id, "val_auc") for r in _children(client, "outage")),
                 300, "the first logged epoch")
        server.stop()
        assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            stop_group(driver, signal.SIGKILL)
        server.stop()
    assert "run `medtune sync`" in (tmp_path / "driver.log").read_text()

    revived = MlflowServer(backend, tmp_path / "artifacts", tmp_path)
    uri = revived.start()
    try:
        sync = [sys.executable, "-m", "tuner", "sync", "--experiment", "outage", "--storage", str(storage),
                "--tracking-uri", uri]
        first = subprocess.run(sync, cwd=REPO, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        assert first.returncode == 0, first.stderr[-2000:]
        client = MlflowClient(uri)
        children = _children(client, "outage")
        assert len(children) == 4
        results = {d.name.split("-")[0]: read_results(d) for d in (storage / "outage").iterdir()
                   if (d / "result.json").is_file()}
        for run in children:
            epochs = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_auc"))
            assert epochs == [line["epoch"] for line in results[run.data.tags["medtune.trial_id"]]]
            assert run.info.status == "FINISHED" and "medtune.test_scores" in run.data.tags
        second = subprocess.run(sync, cwd=REPO, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert "0 epoch results were missing" in second.stdout
        again = _children(client, "outage")
        assert len(again) == 4
        assert all(len(client.get_metric_history(r.info.run_id, "val_auc")) == len(
            client.get_metric_history(r.info.run_id, "epoch")) for r in again)
    finally:
        revived.stop()


def test_diverging_trial_is_stopped_with_its_reason_and_the_search_goes_on(ray_local, small_npz, tmp_path):
    outcome = run_search(SearchRequest(space="quick", dataset=str(small_npz), search="grid", max_epochs=2,
                                       pins={"head": "linear", "lr": [1e9, 0.05], "seed": 0},
                                       storage=str(tmp_path), experiment="diverge", grace_period=2))
    assert outcome.trials == 2 and outcome.errored == 0 and outcome.completed == 1
    runs = {r.data.params["lr"]: r for r in _children(MlflowClient(outcome.tracking_uri), "diverge")}
    assert runs["1000000000.0"].data.tags["medtune.outcome"] == "diverged"
    assert "became" in runs["1000000000.0"].data.tags["medtune.stop_reason"]
    assert runs["0.05"].data.tags["medtune.outcome"] == "completed"


def test_gpus_beyond_any_node_are_refused(ray_local, small_npz, tmp_path):
    with pytest.raises(ConfigError, match="no node can run a trial asking for 1.0 CPU and 2.0 GPU"):
        run_search(SearchRequest(space="quick", dataset=str(small_npz), gpus_per_trial=2.0, storage=str(tmp_path)))


def test_dead_ray_address_and_tracking_server_fail_in_seconds(small_npz, tmp_path):
    port = free_port()  # nothing listens there
    for env, message in ((f"RAY_ADDRESS=127.0.0.1:{port}", "does not answer"),
                         (f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}", "does not answer")):
        key, value = env.split("=", 1)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "tuner", "tune", "--space", "quick", "--dataset", str(small_npz),
                               "--storage", str(tmp_path / key)], capture_output=True, text=True, timeout=120,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), key: value})
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert time.monotonic() - started < 60


def test_resume_without_a_search_is_refused(small_npz, tmp_path):
    with pytest.raises(ConfigError, match="no search to resume"):
        run_search(SearchRequest(space="quick", dataset=str(small_npz), storage=str(tmp_path), experiment="none",
                                 resume=True))


def test_credentials_are_redacted():
    assert redact("postgresql://mlflow:pa55@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact("http://user:tok@127.0.0.1:5000") == "http://user:***@127.0.0.1:5000"
    assert redact("sqlite:///results/mlflow.db") == "sqlite:///results/mlflow.db"
    url, serve = runs_page("https://user:tok@mlflow.example:443/", "7")
    assert "tok" not in url and serve is None
    with pytest.raises(ConfigError) as refused:  # a mistyped scheme is refused without echoing the URI
        resolve_tracking_uri("htps://user:tok@mlflow.example", Path("."))
    assert "tok" not in str(refused.value)


SECRET = "h6-s3cret-Pa55word"


@pytest.mark.slow
def test_no_credential_in_any_param_tag_artifact_log_or_report(small_npz, tmp_path):
    """A search and its analysis against a tracking server whose URI carries a password (and with the
    password in the environment, as on the compose cluster): it appears in no param or tag of any run,
    no file of any artifact (trial scores, the search space, the report), no file of the Tune folder,
    and no line the commands print. (Short form: ``test_credentials_are_redacted``.)"""
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path)
    uri = server.start()
    try:
        secret_uri = uri.replace("http://", f"http://medtune:{SECRET}@")
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_USERNAME": "medtune",
               "MLFLOW_TRACKING_PASSWORD": SECRET}
        storage = tmp_path / "storage"
        tune = subprocess.run([sys.executable, "-m", "tuner", "tune", "--space", "quick", "--set", "head=linear",
                               "--dataset", str(small_npz), "--num-samples", "2", "--max-epochs", "1",
                               "--storage", str(storage), "--experiment", "secret", "--tracking-uri", secret_uri],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=540)
        assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
        analyze = subprocess.run([sys.executable, "-m", "tuner", "analyze", "--experiment", "secret", "--storage",
                                  str(storage), "--tracking-uri", secret_uri, "--resamples", "100", "--refits", "0"],
                                 capture_output=True, text=True, cwd=REPO, env=env, timeout=540)
        assert analyze.returncode in (0, 1), analyze.stdout[-3000:] + analyze.stderr[-3000:]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("secret")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        assert len(runs) >= 3, "the parent run and two trials"
        for run in runs:
            assert SECRET not in json.dumps({**run.data.params, **run.data.tags})
        artifacts = [f for f in (tmp_path / "artifacts").rglob("*") if f.is_file()]
        assert any(f.name.endswith(".csv") for f in artifacts) and any("report" in str(f) for f in artifacts)
        for path in [*artifacts, *(f for f in storage.rglob("*") if f.is_file())]:
            assert SECRET.encode() not in path.read_bytes(), path
        printed = (tune.stdout + tune.stderr + analyze.stdout + analyze.stderr).splitlines()
        assert not [line for line in printed if SECRET in line]
    finally:
        server.stop()


def test_every_torch_load_in_the_package_is_weights_only():
    """No weight file may run pickled code: every torch.load call passes weights_only=True."""
    calls = []
    for path in [*REPO.glob("tuner/**/*.py"), *REPO.glob("analysis/**/*.py"), *REPO.glob("search_spaces/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                    getattr(node.func.value, "id", None) == "torch":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert calls, "found no torch.load call at all"
    assert all(safe for _, safe in calls), [where for where, safe in calls if not safe]
