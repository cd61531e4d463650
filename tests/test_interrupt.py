"""Ctrl-C or SIGTERM of the driver stops the trials cleanly and says how to resume; ``--resume`` then
finishes with no finished trial re-run and no MLflow run duplicated; a second Ctrl-C still exits.

The short form runs a real search in this process (the shared local Ray) and signals it; the slow
forms run ``medtune tune`` in a subprocess, as a user would, and resume it with the command it printed."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.services import REPO, stop_group, wait_for
from tuner.interrupt import SearchInterrupted, graceful_stop, resume_command
from tuner.search import SearchRequest, run_search
from tuner.tracking import read_results

PINS = {"head": "linear", "lr": [0.01, 0.03, 0.1], "seed": 0, "backbone": "resnet18_small"}
TRIALS = 3  # one per lr


def children(client: MlflowClient, experiment: str) -> list:
    """The trials' child runs of ``experiment``."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r for r in client.search_runs([found.experiment_id], max_results=500) if "medtune.trial_id" in r.data.tags]


def finished(storage: Path, experiment: str) -> int:
    """How many trials MLflow has seen finish (the logger closes a run when Tune has marked it done).
    Nothing is asked of the store before a trial has reported: the driver creates and migrates it first,
    and a second process opening it meanwhile would race those migrations."""
    if not any((storage / experiment).glob("*/result.json")):
        return 0
    try:
        return sum(r.info.status == "FINISHED" for r in children(MlflowClient(f"sqlite:///{storage / 'mlflow.db'}"),
                                                                   experiment))
    except Exception:  # the store is being created
        return 0


def trial_results(experiment_dir: Path) -> dict[str, str]:
    """trial id -> its result.json as written."""
    return {d.name.split("-")[0]: (d / "result.json").read_text() for d in experiment_dir.iterdir()
            if (d / "result.json").is_file()}


def interrupted_search(small_npz: Path, storage: Path, experiment: str, *, max_epochs: int = 2,
                       when: Callable[[], bool] | None = None, **options) -> tuple[SearchRequest, SearchInterrupted]:
    """A real 3-trial search in this process (every trial runs ``max_epochs``: ASHA's grace is the whole
    budget), SIGINT-ed once ``when()`` holds; by default once its first trial has finished."""
    request = SearchRequest(space="quick", dataset=str(small_npz), search="grid", max_epochs=max_epochs, pins=PINS,
                            storage=str(storage), experiment=experiment, grace_period=max_epochs, max_failures=0,
                            **options)
    ready = when or (lambda: finished(storage, experiment) >= 1)
    running = threading.Event()

    def signal_when_ready() -> None:
        deadline = time.monotonic() + 300
        while running.is_set() and time.monotonic() < deadline:
            if ready():
                time.sleep(0.5)
                if running.is_set():
                    os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.2)

    running.set()
    watcher = threading.Thread(target=signal_when_ready, daemon=True)
    watcher.start()
    try:
        with pytest.raises(SearchInterrupted) as stopped:
            run_search(request)
    finally:
        running.clear()
        watcher.join()
    return request, stopped.value


def test_ctrl_c_stops_cleanly_and_resume_reruns_no_finished_trial(ray_local, small_npz, tmp_path):
    request, stopped = interrupted_search(small_npz, tmp_path, "stop", checkpoint_every=1)
    assert stopped.exit_code == 130 and not stopped.forced
    advice = stopped.advice(resume_command(["tune", "--space", "quick"], stopped.experiment))
    assert "stopped cleanly" in advice and "medtune tune --space quick --experiment stop --resume" in advice
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    done_before = {r.data.tags["medtune.trial_id"]: r.info.run_id for r in children(client, "stop")
                   if r.info.status == "FINISHED"}
    before = trial_results(tmp_path / "stop")
    assert done_before and len(done_before) < 3
    parent = client.get_run(children(client, "stop")[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "RUNNING"  # the search is not over: --resume continues the same parent run

    outcome = run_search(replace(request, resume=True))
    assert outcome.trials == 3 and outcome.errored == 0
    after = trial_results(tmp_path / "stop")
    runs = children(client, "stop")
    assert len(runs) == 3 and len({r.data.tags["medtune.trial_id"] for r in runs}) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    for trial_id, run_id in done_before.items():  # not re-run: the same run, the same results
        assert after[trial_id] == before[trial_id]
        assert {r.data.tags["medtune.trial_id"]: r.info.run_id for r in runs}[trial_id] == run_id
    for run in runs:  # each epoch logged once, even for a trial that re-ran epochs after its checkpoint
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch")) == [1, 2]


def _driver(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner", "tune", *args], cwd=REPO, stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _cli_args(small_npz: Path, storage: Path, experiment: str) -> list[str]:
    return ["--space", "quick", "--dataset", str(small_npz), "--search", "grid", "--max-epochs", "2",
            "--grace-period", "2", "--set", "head=linear", "--set", "lr=[0.01,0.03,0.1]", "--set", "seed=0",
            "--set", "backbone=resnet18_small", "--storage", str(storage), "--experiment", experiment,
            "--checkpoint-every", "1"]


@pytest.mark.slow
def test_sigterm_of_the_cli_says_how_to_resume_and_that_command_finishes(small_npz, tmp_path):
    storage = tmp_path / "storage"
    driver = _driver(_cli_args(small_npz, storage, "term"), tmp_path / "first.log")
    try:
        wait_for(lambda: finished(storage, "term") >= 1, 400, "a finished trial")
        driver.send_signal(signal.SIGTERM)
        code = driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            stop_group(driver, signal.SIGKILL)
    log = (tmp_path / "first.log").read_text()
    assert code == 143, log[-3000:]
    assert "SIGTERM: the search stopped cleanly" in log and "Traceback" not in log.split("SIGTERM received")[-1]
    command = log.split("Resume with:\n", 1)[1].splitlines()[0].strip()
    assert command.startswith("medtune tune ") and command.endswith("--experiment term --resume")
    before = trial_results(storage / "term")
    done = {r.data.tags["medtune.trial_id"] for r in children(MlflowClient(f"sqlite:///{storage / 'mlflow.db'}"),
                                                                "term") if r.info.status == "FINISHED"}

    argv = shlex.split(command)[1:]
    resumed = subprocess.run([sys.executable, "-m", "tuner", *argv], cwd=REPO, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = trial_results(storage / "term")
    assert len(after) == 3 and all(after[t] == before[t] for t in done)
    runs = children(MlflowClient(f"sqlite:///{storage / 'mlflow.db'}"), "term")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert all(len(read_results(d)) >= 2 for d in (storage / "term").iterdir() if (d / "result.json").is_file())


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(small_npz, tmp_path):
    storage = tmp_path / "storage"
    driver = _driver(_cli_args(small_npz, storage, "twice"), tmp_path / "driver.log")
    try:
        wait_for(lambda: any((storage / "twice").glob("*/result.json")), 400, "a first epoch")
        driver.send_signal(signal.SIGINT)
        time.sleep(0.3)
        driver.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = driver.wait(timeout=60)
        waited = time.monotonic() - started
    finally:
        if driver.poll() is None:
            stop_group(driver, signal.SIGKILL)
    log = (tmp_path / "driver.log").read_text()
    assert code == 130, log[-3000:]
    # the second signal found the graceful stop under way, or (a fast stop) the process already exiting
    assert "SIGINT again: exited without waiting" in log or "SIGINT again: exiting at once" in log, log[-3000:]
    assert "Resume with:" in log and "Exception ignored" not in log
    assert waited < 60


def test_a_second_signal_during_the_graceful_stop_interrupts_it():
    """In this process, Tune's SIGUSR1 handler (which ``graceful_stop`` calls on the first signal)
    replaced by a recorder: the first SIGINT asks it to stop; the second raises at once."""
    asked: list[int] = []
    before = signal.getsignal(signal.SIGINT)  # Python's, or the one an earlier Tune run left in this process
    with pytest.raises(KeyboardInterrupt), graceful_stop() as request:
        signal.signal(signal.SIGUSR1, lambda signum, frame: asked.append(signum))  # Tune's, while it runs
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(lambda: asked, 5, "the stop asked of Tune")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the second signal interrupts this
    assert request.signum == signal.SIGINT and asked == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before  # the handler it replaced is back


def test_a_signal_while_the_cli_exits_after_a_stop_ends_it_at_once():
    """What the CLI does once it holds the ``SearchInterrupted``: a signal during the exit's ``atexit``
    work (Ray's shutdown, here a sleep) ends the process at once, with 130. Python's own handler raised
    ``KeyboardInterrupt`` inside Ray's shutdown, and the driver died of SIGSEGV."""
    child = subprocess.Popen([sys.executable, "-c", (
        "import atexit, sys, time\n"
        "from tuner.interrupt import exit_at_once_on_another_signal\n"
        "exit_at_once_on_another_signal()\n"
        "atexit.register(lambda: (print('exiting', flush=True), time.sleep(60)))\n"
        "sys.exit(0)\n")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "exiting"
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert code == 130
    assert "SIGINT again: exiting at once" in child.stderr.read()
