"""The local Ray that ``init_ray`` starts: its trial workers get ``OMP_WAIT_POLICY=PASSIVE`` unless the
user chose a policy (``tuner/cluster.py`` says why; ``benchmarks/omp_wait.py`` measures it). Each case
starts its own Ray in a fresh interpreter: the test session's Ray is already up, and the policy is read
from the environment the workers are started with."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A Tune trial's worker sees what a remote task sees: both are started by the local raylet.
PROBE = """
import os, ray
from tuner.cluster import init_ray
init_ray(1, 0)
print("POLICY", ray.get(ray.remote(lambda: os.environ.get("OMP_WAIT_POLICY")).remote()))
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_a_local_ray_gives_its_workers_the_passive_wait_policy_unless_one_is_set(given, expected):
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "RAY_ADDRESS")}
    if given:
        env["OMP_WAIT_POLICY"] = given
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as ray_tmp:  # Ray's socket paths must be short
        env.update({"PYTHONPATH": str(REPO), "RAY_TMPDIR": ray_tmp})
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"POLICY {expected}" in done.stdout.splitlines(), done.stdout
