"""Create (or update the password of) the MLflow user that medtune's search driver logs as.

Run once after the MLflow server is healthy (the `mlflow-init` service of docker/compose.yaml does),
with the basic-auth *admin* credentials as the client's credentials:

    MLFLOW_TRACKING_URI=http://mlflow:5000
    MLFLOW_TRACKING_USERNAME=<admin>  MLFLOW_TRACKING_PASSWORD=<admin password>
    MEDTUNE_MLFLOW_USERNAME=<user>    MEDTUNE_MLFLOW_PASSWORD=<its password>

The user is an ordinary (non-admin) user: it may create experiments, and owns (MANAGE) the ones it
creates. Running it again is harmless; it re-sets the password to MEDTUNE_MLFLOW_PASSWORD.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient


def wait_for_server(uri: str, seconds: float = 120.0) -> None:
    """Until ``/health`` answers: the server may still be running its database migrations."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise SystemExit(f"mlflow_sync_user: {uri} is not healthy after {seconds:g}s ({error})") from error
            time.sleep(2)


def main() -> int:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    admin = os.environ["MLFLOW_TRACKING_USERNAME"]
    username = os.environ.get("MEDTUNE_MLFLOW_USERNAME", "")
    password = os.environ.get("MEDTUNE_MLFLOW_PASSWORD", "")
    if not username or not password:
        print("mlflow_sync_user: MEDTUNE_MLFLOW_USERNAME and MEDTUNE_MLFLOW_PASSWORD must be set",
              file=sys.stderr)
        return 2
    if username == admin:
        print(f"mlflow_sync_user: {username!r} is the admin; nothing to create")
        return 0
    wait_for_server(uri)
    client = AuthServiceClient(uri)  # authenticates with MLFLOW_TRACKING_USERNAME/_PASSWORD
    try:
        client.get_user(username)
    except RestException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        print(f"mlflow_sync_user: created user {username!r}")
    else:
        client.update_user_password(username, password)
        print(f"mlflow_sync_user: user {username!r} exists; password re-set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
