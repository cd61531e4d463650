"""Real services for the cluster and fault-tolerance tests, all on this machine and all stopped by the
test that started them (HTTP endpoints on 127.0.0.1): a Ray cluster of several nodes (each
`ray start --block` in its own process group and its own --temp-dir, advertising GPUs the machine does
not have), a PostgreSQL server in a temporary folder, and an MLflow tracking server on it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Signal a process started with start_new_session=True and everything in its group."""
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout_s)


def ray_env() -> dict[str, str]:
    """Ray 2.60 turns token authentication on by default; its CLI clients say so with RAY_AUTH_MODE."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}


class RayCluster:
    """A head node plus worker nodes on this machine, each with its own --temp-dir."""

    def __init__(self, root: Path) -> None:
        from ray._private.services import get_node_ip_address

        self.root = root
        # Every node registers under the machine's own IP, as Ray picks it: nodes whose addresses
        # disagree (one 127.0.0.1, one the machine's IP) cannot pull objects from each other.
        self.node_ip = get_node_ip_address()
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.nodes: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    @property
    def address(self) -> str:
        return f"{self.node_ip}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str]) -> None:
        temp = Path("/tmp") / f"ray-{name}-{os.getpid()}-{self.gcs_port}"  # short: Ray's socket paths are limited
        shutil.rmtree(temp, ignore_errors=True)
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 (closed in stop)
        self.logs.append(log)
        # Several nodes on one machine: each needs its own ports for its agents, not Ray's fixed defaults.
        ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                 "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]
        self.nodes[name] = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--temp-dir", str(temp), "--node-ip-address", self.node_ip,
             "--disable-usage-stats", *ports, *args], stdout=log, stderr=subprocess.STDOUT, env=ray_env(),
            start_new_session=True)

    def start_head(self, cpus: float, gpus: float) -> None:
        self._start("head", ["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard_port), "--num-cpus", str(cpus),
                             "--num-gpus", str(gpus), "--ray-client-server-port", str(free_port())])
        wait_for(self._dashboard_up, 120, "the Ray head's dashboard")
        # The dashboard answers before the state API lists the head: wait for the head itself.
        wait_for(lambda: any(n.get("is_head_node") for n in self.alive_nodes()), 120, "the head node to be listed")

    def start_worker(self, name: str, cpus: float, gpus: float) -> str:
        """Start a worker node and return its node id, once the cluster lists it as alive."""
        known = {n["node_id"] for n in self.alive_nodes()}
        self._start(name, ["--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus)])

        def new_worker() -> str | None:
            nodes = self.alive_nodes()
            joined = [n["node_id"] for n in nodes if n["node_id"] not in known and not n.get("is_head_node")]
            return joined[0] if joined else None

        return wait_for(new_worker, 120, f"worker node {name} to join")

    def _dashboard_up(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2).close()
        except urllib.error.HTTPError:
            pass  # it answers (without a token: 401), so it is up
        except OSError:
            return False
        return True

    def alive_nodes(self) -> list[dict]:
        """Alive nodes as `ray list nodes` reports them (through the state API of the dashboard)."""
        done = subprocess.run([str(BIN / "ray"), "list", "nodes", "--format", "json", "--address", self.dashboard],
                              capture_output=True, text=True, env=ray_env(), timeout=60)
        start = done.stdout.find("[")  # the CLI may print log lines before its JSON
        if done.returncode != 0 or start < 0:
            return []
        return [n for n in json.loads(done.stdout[start:]) if n.get("state") == "ALIVE"]

    def submit(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        """`ray job submit` (waits for the job); retried while the head's job agent is still starting."""
        deadline = time.monotonic() + 120
        while True:
            done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.dashboard, *args],
                                  capture_output=True, text=True, env=ray_env(), timeout=timeout_s)
            if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
                return done
            time.sleep(3)

    def kill(self, name: str) -> None:
        stop_group(self.nodes.pop(name), signal.SIGKILL)

    def stop(self) -> None:
        for name in list(self.nodes)[::-1]:  # `ray start --block` can take 30 s over a SIGTERM; nothing to keep
            stop_group(self.nodes.pop(name), timeout_s=5)
        for log in self.logs:
            log.close()


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run its tools as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed: `apt-get install -y postgresql` (.ci/run does this).")
        self.bin = Path(found[-1]).parent
        self.data = Path("/tmp") / f"medtune-pg-{os.getpid()}-{free_port()}"
        self.port = free_port()

    def start(self) -> str:
        self.data.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        subprocess.run(_as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust",
                                     "--username=postgres"]), check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                                     str(self.data / "server.log"), "-o",
                                     f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                     "-U", "postgres", "mlflow"]), check=True, capture_output=True, timeout=60)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.data, ignore_errors=True)


class MlflowServer:
    """`mlflow server` with one worker and job execution off (plainly started it runs 15 processes)."""

    def __init__(self, backend_uri: str, artifacts: Path, root: Path) -> None:
        self.backend_uri, self.artifacts, self.root = backend_uri, artifacts, root
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        log = open(self.root / f"mlflow-{self.port}.log", "a")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_uri, "--artifacts-destination",
             str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        wait_for(self._healthy, 180, "the MLflow server")
        return self.uri

    def _healthy(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.uri}/health", timeout=2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, signal.SIGKILL)
            self.process = None
