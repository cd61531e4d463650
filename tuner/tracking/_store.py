"""The tracking store: which MLflow URI a command logs to, reaching it, its experiment, and the runs
a command starts. Written once here so ``medtune tune``, ``medtune sync`` and ``medtune pretrain``
(single run and search) choose and open the store the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from tuner import __version__
from tuner.errors import ConfigError
from tuner.options import check_tracking_uri
from tuner.schema import ROLE_TAG

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# What the MLflow 3 UI reads to choose an experiment's page: "custom_model_development" opens on its runs
# (model training), where an untagged experiment may open on the GenAI overview (traces, token usage).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def default_tracking_uri(storage: Path) -> str:
    """A SQLite store inside the results folder: logging works with no server to start."""
    return f"sqlite:///{storage / 'mlflow.db'}"


def resolve_tracking_uri(given: str | None, storage: Path) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in ``storage``, its scheme checked;
    and MLflow's HTTP retries bounded, since every command that resolves a store is about to talk to it."""
    limit_mlflow_retries()
    uri = given or os.environ.get(TRACKING_URI_ENV) or default_tracking_uri(storage)
    check_tracking_uri(uri)
    _CREDENTIALS[redact(uri)] = uri
    if urllib.parse.urlsplit(uri).password is not None:  # MLflow's own "View run at <uri>" would print it
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return uri


_CREDENTIALS: dict[str, str] = {}  # redacted URI -> the URI as given, in this process only


def unredact(uri: str) -> str:
    """A redacted URI (what is pickled into Tune's folder) with the password this process was given
    for it; without one, its user info dropped, so that MLflow reads $MLFLOW_TRACKING_USERNAME / _PASSWORD."""
    if uri in _CREDENTIALS:
        return _CREDENTIALS[uri]
    parts = urllib.parse.urlsplit(uri)
    if parts.password != "***":
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def limit_mlflow_retries() -> None:
    """MLflow's HTTP client retries a dead server for minutes per call by default; a driver must not
    stall that long (the trial logger retries on its own schedule instead). A value the user set wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


def artifact_root(tracking_uri: str, storage: Path) -> Path | None:
    """A local store keeps artifacts beside it in ``storage``; a server decides for itself."""
    return storage / "mlartifacts" if tracking_uri.startswith(("sqlite:", "file:", "/")) else None


def redact(uri: str) -> str:
    """A URI with its password replaced, for logs and params: ``postgresql://u:***@host/db``."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's retries, when an HTTP tracking server does not answer."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(health, timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(f"the MLflow tracking server {redact(tracking_uri)} does not answer ({error}). Start "
                          "it, or fix --tracking-uri / $MLFLOW_TRACKING_URI.") from error


@contextmanager
def _one_at_a_time(tracking_uri: str) -> Iterator[None]:
    """For a SQLite store, hold a lock file beside the database. MLflow creates and migrates a new
    store on its first use, and two processes doing that at once break one another ("table ... already
    exists", "online migration expected to match one row"): two searches started together into a fresh
    default store. The lock makes them take turns; opening an existing store is unchanged."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_experiment(tracking_uri: str, name: str, artifact_location: Path | None) -> tuple[MlflowClient, str]:
    """The MLflow experiment ``name`` (created if new, tagged to open on its runs in the UI:
    ``EXPERIMENT_KIND_TAG``); fails early if the store cannot be reached."""
    check_reachable(tracking_uri)
    try:
        with _one_at_a_time(tracking_uri):
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                if EXPERIMENT_KIND_TAG not in experiment.tags:  # one made before medtune tagged them
                    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return client, experiment.experiment_id
            location = artifact_location.as_uri() if artifact_location is not None else None
            return client, client.create_experiment(name, artifact_location=location,
                                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception as error:  # mlflow raises many types for an unreachable store
        raise ConfigError(f"cannot reach the MLflow tracking store {redact(tracking_uri)!r} "
                          f"({type(error).__name__}: {str(error)[:300]}). Start the server or fix "
                          "--tracking-uri / $MLFLOW_TRACKING_URI.") from error


def runs_page(tracking_uri: str, experiment_id: str) -> tuple[str, str | None]:
    """Where a person sees an experiment's runs: the URL of its runs page, and the command that serves it
    first (None for a tracking server, which already does): ``<server>/#/experiments/<id>/runs``, or for
    a local store ``mlflow ui`` on it and ``http://127.0.0.1:5000/#/experiments/<id>/runs``. MLflow 3.17's
    UI ignores the experiment-kind tag when it picks a workflow (it reads the URL, then the browser's last
    choice, and defaults to GenAI), so the URL names the machine-learning workflow itself."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{redact(tracking_uri).rstrip('/')}/{page}", None
    return f"{LOCAL_UI}/{page}", f"mlflow ui --backend-store-uri {redact(tracking_uri)} --port 5000"


@dataclass(frozen=True)
class TrackingStore:
    """An opened store: the client, the experiment's id, and the URI it was opened with (for logs and
    for the trial logger, which opens its own client on the driver)."""

    client: MlflowClient
    experiment_id: str
    tracking_uri: str


def open_store(storage: Path, experiment: str, tracking_uri: str | None = None) -> TrackingStore:
    """The experiment ``experiment`` in the store a command logs to (``resolve_tracking_uri``), with a
    local store's artifacts in ``storage``; ``storage`` is created, since a SQLite store lives there."""
    uri = resolve_tracking_uri(tracking_uri, storage)
    storage.mkdir(parents=True, exist_ok=True)
    client, experiment_id = open_experiment(uri, experiment, artifact_root(uri, storage))
    return TrackingStore(client, experiment_id, uri)


def git_commit() -> str:
    """The code's commit, tagged on every top-level run so a result can be traced to its code."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # e.g. a `ray job submit` working dir, which carries no .git


def param_value(value: Any) -> str:
    """How a value is written as an MLflow param: lists and dicts as JSON (the analysis reads them
    back), anything else as ``str``."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def start_run(client: MlflowClient, experiment_id: str, run_name: str, params: Mapping[str, Any], *, role: str,
              artifacts: Mapping[str, Path] | None = None) -> str:
    """A top-level run (a search's parent, or a pretraining run) tagged with its role, the medtune
    version and the commit, with its params and ``artifacts`` (artifact folder -> file) logged."""
    run = client.create_run(experiment_id, run_name=run_name, tags={
        "medtune.version": __version__, "medtune.git_commit": git_commit(), ROLE_TAG: role})
    client.log_batch(run.info.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
    for folder, path in (artifacts or {}).items():
        client.log_artifact(run.info.run_id, str(path), artifact_path=folder)
    return run.info.run_id
