"""Storage that fills mid-search ends the affected trials with a clear reason; the search and the finished
trials' results survive; ``--resume`` after freeing space finishes.

The storage is a real, small tmpfs mounted for the test. As root (CI) it is mounted here, and a failed
mount fails the test. A user who is not root runs the test again in a user and mount namespace of its
own (``unshare --user --map-root-user --mount``), where it is root and can mount one; a machine that
allows neither fails the test and says why. The tmpfs is filled for real once the first trial has
finished, leaving a few MB: enough for the driver's small files, not for a trial's next checkpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.test_interrupt import PINS, TRIALS, children, finished, trial_results
from tuner.search import SearchRequest, run_search

LEFT_FREE = 8 * 2**20  # bytes left once the disk is "full": under one checkpoint of resnet18_small (~45 MB)


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MB tmpfs, unmounted afterwards; None where this user is not root (the test reruns itself)."""
    if os.geteuid() != 0:
        yield None
        return
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:  # root can always mount one: a failure here is a broken machine
        pytest.fail(f"cannot mount a tmpfs ({done.stderr.strip() or done.returncode})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _rerun_as_namespace_root(nodeid: str) -> None:
    """Run test ``nodeid`` in a user and mount namespace of its own, where this user is root: its
    own Ray (in a temporary folder it can write) and its own tmpfs."""
    ray_dir = tempfile.mkdtemp(prefix="mt-ray-")  # short: Ray's socket paths have a length limit
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m", "pytest",
                               "-q", "-p", "no:cacheprovider", nodeid], cwd=REPO, capture_output=True, text=True,
                              timeout=900, env={**os.environ, "RAY_TMPDIR": ray_dir})
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert done.returncode == 0 and " passed" in done.stdout, (
        "not root, and the test could not run as root of its own user namespace (unshare: needs unprivileged "
        "user namespaces, e.g. sysctl kernel.unprivileged_userns_clone=1; or run the tests as root):\n"
        + done.stdout[-3000:] + done.stderr[-2000:])


def _fill(disk, leave: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as file:
        chunk = b"\0" * 2**20
        for _ in range(max(0, free - leave) // len(chunk)):
            file.write(chunk)


def test_a_disk_that_fills_ends_the_affected_trials_with_the_reason_and_resume_finishes(request, small_disk):
    if small_disk is None:
        _rerun_as_namespace_root(request.node.nodeid)
        return
    request.getfixturevalue("ray_local")  # Ray and the data only where the test runs
    small_npz = request.getfixturevalue("small_npz")
    # one trial at a time (2 CPUs each, of Ray's 2): a trial that finds the disk full has removed its partial
    # checkpoint before the driver writes its error files, which another trial's checkpoint in flight could
    # otherwise take the last MB from (that race, in CI, left an empty error pickle: ``tune_results``)
    search = SearchRequest(space="quick", dataset=str(small_npz), search="grid", max_epochs=2, pins=PINS,
                          storage=str(small_disk), experiment="full", grace_period=2, max_failures=0,
                          cpus_per_trial=2)
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
        outcome = run_search(search)  # the search itself survives the full disk
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
    resumed = run_search(replace(search, resume=True))
    assert resumed.trials == TRIALS and resumed.errored == 0
    after = trial_results(small_disk / "full")
    assert all(after[t] == before[t] for t in done)  # finished trials kept as they were
    runs = children(client, "full")
    assert len(runs) == TRIALS and all(r.info.status == "FINISHED" for r in runs)
    assert all("medtune.test_scores" in r.data.tags for r in runs)
