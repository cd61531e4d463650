#!/bin/sh
# Entrypoint of the medtune MLflow image (docker/Dockerfile.mlflow).
#
# `mlflow-entrypoint.sh --host 0.0.0.0 ...` (arguments starting with "-") runs `mlflow server ...`
# after preparing, from the environment:
#   MLFLOW_BACKEND_STORE_URI  unless set: postgresql+psycopg2://POSTGRES_USER:POSTGRES_PASSWORD@
#                             POSTGRES_HOST:POSTGRES_PORT/POSTGRES_DB (user and password URL-quoted)
#   MLFLOW_AUTH_CONFIG_PATH   unless set: a basic-auth config written to $HOME/basic_auth.ini (mode
#                             600) whose database_uri is MLFLOW_AUTH_DATABASE_URI, or else the
#                             POSTGRES_* server's database MLFLOW_AUTH_DB (default mlflow_auth,
#                             created if missing), and whose default_permission is
#                             MLFLOW_AUTH_DEFAULT_PERMISSION (default READ).
# The basic-auth app itself reads MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD (used
# only to create the admin on the first start) and MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF).
# Passwords stay in the environment: none is put on a command line.
#
# Any other command (e.g. `python /usr/local/lib/medtune/mlflow_sync_user.py`) runs unchanged.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- mlflow server "$@"
fi

if [ "$1" = "mlflow" ] && [ "${2:-}" = "server" ]; then
    : "${MLFLOW_AUTH_ADMIN_PASSWORD:?MLFLOW_AUTH_ADMIN_PASSWORD must be set (the basic-auth admin password)}"
    : "${MLFLOW_FLASK_SERVER_SECRET_KEY:?MLFLOW_FLASK_SERVER_SECRET_KEY must be set (basic-auth CSRF key)}"
    if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ] || { [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ] && [ -z "${MLFLOW_AUTH_DATABASE_URI:-}" ]; }; then
        : "${POSTGRES_USER:?POSTGRES_USER must be set (or MLFLOW_BACKEND_STORE_URI and MLFLOW_AUTH_DATABASE_URI)}"
        : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (or MLFLOW_BACKEND_STORE_URI and MLFLOW_AUTH_DATABASE_URI)}"
        : "${POSTGRES_DB:?POSTGRES_DB must be set (or MLFLOW_BACKEND_STORE_URI and MLFLOW_AUTH_DATABASE_URI)}"
    fi
    umask 077
    if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
        MLFLOW_BACKEND_STORE_URI="$(python -c '
import os, urllib.parse as u
e = os.environ
print("postgresql+psycopg2://{}:{}@{}:{}/{}".format(
    u.quote(e["POSTGRES_USER"], safe=""), u.quote(e["POSTGRES_PASSWORD"], safe=""),
    e.get("POSTGRES_HOST", "postgres"), e.get("POSTGRES_PORT", "5432"), e["POSTGRES_DB"]))
')"
        export MLFLOW_BACKEND_STORE_URI
    fi
    if [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
        MLFLOW_AUTH_CONFIG_PATH="${HOME:-/tmp}/basic_auth.ini"
        export MLFLOW_AUTH_CONFIG_PATH
        python - "$MLFLOW_AUTH_CONFIG_PATH" <<'PY'
import configparser, os, sys, urllib.parse as u

e = os.environ
uri = e.get("MLFLOW_AUTH_DATABASE_URI") or "postgresql+psycopg2://{}:{}@{}:{}/{}".format(
    u.quote(e["POSTGRES_USER"], safe=""), u.quote(e["POSTGRES_PASSWORD"], safe=""),
    e.get("POSTGRES_HOST", "postgres"), e.get("POSTGRES_PORT", "5432"),
    e.get("MLFLOW_AUTH_DB", "mlflow_auth"))
if not e.get("MLFLOW_AUTH_DATABASE_URI"):
    # The auth tables live in their own database on the same server; create it on first start.
    import psycopg2
    from psycopg2 import sql

    name = e.get("MLFLOW_AUTH_DB", "mlflow_auth")
    conn = psycopg2.connect(host=e.get("POSTGRES_HOST", "postgres"), port=e.get("POSTGRES_PORT", "5432"),
                            user=e["POSTGRES_USER"], password=e["POSTGRES_PASSWORD"],
                            dbname=e["POSTGRES_DB"])
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"mlflow-entrypoint: created database {name!r} for the basic-auth app", flush=True)
    conn.close()
config = configparser.ConfigParser()  # MLflow reads it with interpolation on: "%" must be "%%"
config["mlflow"] = {
    "default_permission": e.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ"),
    "admin_username": e.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin").replace("%", "%%"),
    "database_uri": uri.replace("%", "%%"),
    "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    config.write(out)
PY
    fi
fi

exec "$@"
