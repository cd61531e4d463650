"""Storage that fills mid-search ends the affected trials with a clear reason; the search and the finished
trials' results survive; ``--resume`` after freeing space finishes.

The storage is a real, small tmpfs mounted for the test. As root (CI) a failed mount fails the test; a
non-root machine cannot mount one, and there the test is skipped and says why. It is filled for real
once the first trial has finished, leaving a few MB: enough for the driver's small files, not for a
trial's next checkpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from tests.test_interrupt import PINS, TRIALS, children, finished, trial_results
from tuner.search import SearchRequest, run_search

LEFT_FREE = 8 * 2**20  # bytes left once the disk is "full": under one checkpoint of resnet18_small (~45 MB)


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs ({done.stderr.strip() or done.returncode})"
        if os.geteuid() == 0:  # root can always mount one (CI runs as root): a failure here is a broken machine
            pytest.fail(reason)
        pytest.skip(f"{reason}: the full-disk test needs root to mount a real small filesystem")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(disk, leave: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as file:
        chunk = b"\0" * 2**20
        for _ in range(max(0, free - leave) // len(chunk)):
            file.write(chunk)


def test_a_disk_that_fills_ends_the_affected_trials_with_the_reason_and_resume_finishes(ray_local, small_npz,
                                                                                        small_disk):
    request = SearchRequest(space="quick", dataset=str(small_npz), search="grid", max_epochs=2, pins=PINS,
                            storage=str(small_disk), experiment="full", grace_period=2, max_failures=0)
    running = threading.Event()
    running.set()

    def fill_after_first_trial() -> None:
        while running.is_set():
            if finished(small_disk, "full") >= 1:
                _fill(small_disk, LEFT_FREE)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=fill_after_first_trial, daemon=True)
    watcher.start()
    try:
        outcome = run_search(request)  # the search itself survives the full disk
    finally:
        running.clear()
        watcher.join()
    assert (small_disk / "filler").is_file(), "the disk was never filled"
    assert outcome.trials == TRIALS and outcome.completed >= 1 and outcome.errored >= 1
    client = MlflowClient(f"sqlite:///{small_disk / 'mlflow.db'}")
    runs = children(client, "full")
    errored = [r for r in runs if r.info.status == "FAILED"]
    assert len(errored) == outcome.errored
    for run in errored:  # the reason, in words, on the trial's run
        assert "could not be written: No space left on device" in run.data.tags["medtune.error"]
        assert "--resume" in run.data.tags["medtune.error"]
    done = {r.data.tags["medtune.trial_id"] for r in runs if r.info.status == "FINISHED"}
    before = trial_results(small_disk / "full")

    (small_disk / "filler").unlink()  # space freed
    resumed = run_search(replace(request, resume=True))
    assert resumed.trials == TRIALS and resumed.errored == 0
    after = trial_results(small_disk / "full")
    assert all(after[t] == before[t] for t in done)  # finished trials kept as they were
    runs = children(client, "full")
    assert len(runs) == TRIALS and all(r.info.status == "FINISHED" for r in runs)
    assert all("medtune.test_scores" in r.data.tags for r in runs)
