"""The pretrained encoder on disk and as ``weights=ssl:<reference>``.

``medtune pretrain`` writes ``encoder.pt`` (the trunk's state dict, the keys a classifier's trunk has)
and ``encoder.json`` beside it (backbone, image_size, latent_dim and the run's settings), and logs both
to MLflow under the artifact folder ``encoder/``. ``ssl:<reference>`` accepts:

- the path of an ``encoder.pt`` (or of the folder holding it);
- an MLflow run id (32 hex digits) of a ``medtune pretrain`` run (the single run, or a search's parent
  run, which holds the best trial's encoder), looked up in ``$MLFLOW_TRACKING_URI`` and downloaded once
  into ``$MEDTUNE_WEIGHTS_DIR/ssl/<run id>/``.

Before any training the encoder is checked against the requested backbone: its ``encoder.json``
names the backbone it was pretrained with, and its tensors must match the trunk's keys and shapes.

This module registers the ``ssl:`` weight source (``SslEncoder``): ``tuner.models`` never imports the
pretraining side, so the form exists once this module is imported (``tuner.weight_sources`` does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec
from tuner.models.weights import (
    WeightSource,
    describe_mismatch,
    load_error_text,
    register_weight_source,
    weights_dir,
)
from tuner.pretrain.vae import INPUT_PREPROCESSING, build_trunk
from tuner.spec import Preprocessing

ENCODER_FILE = "encoder.pt"
META_FILE = "encoder.json"
ARTIFACT_DIR = "encoder"  # the MLflow artifact folder holding both
FORMAT = "medtune-ssl-vae-encoder/1"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SSL_PREFIX = "ssl:"  # weights=ssl:<encoder.pt path or MLflow run id>
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_checked: dict[tuple[str, float, str], None] = {}


def save_encoder(folder: Path, encoder_state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``encoder.pt`` and ``encoder.json`` into ``folder``; returns the ``encoder.pt`` path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ENCODER_FILE
    torch.save({k: v.detach().cpu().clone() for k, v in encoder_state.items()}, path)
    (folder / META_FILE).write_text(json.dumps({"format": FORMAT, **meta}, indent=2, default=str))
    return path


def read_meta(encoder_path: Path) -> dict[str, Any] | None:
    """The JSON written next to the encoder (``encoder.json`` for ``encoder.pt``), if there is one."""
    meta_path = encoder_path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def resolve_ssl_encoder(spec: BackboneSpec, reference: str) -> Path:
    """The checked ``encoder.pt`` that ``weights=ssl:<reference>`` names, for backbone ``spec``."""
    ref = reference.strip()
    weights = f"{SSL_PREFIX}{ref}"
    if not ref:
        raise ConfigError("weights='ssl:' names no encoder: use ssl:<path of encoder.pt> or ssl:<MLflow run id> "
                          "of a `medtune pretrain` run.")
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / ENCODER_FILE).is_file():
            raise ConfigError(f"weights={weights}: the folder {path} holds no {ENCODER_FILE}. Point to the "
                              f"{ENCODER_FILE} that `medtune pretrain` wrote (or its MLflow run id).")
        path = path / ENCODER_FILE
    elif not path.is_file():
        if not _RUN_ID.match(ref):
            raise ConfigError(f"weights={weights}: the SSL encoder {ref!r} does not exist: it is neither a file "
                              f"nor an MLflow run id (32 hex digits). Give the {ENCODER_FILE} that `medtune "
                              "pretrain` wrote, or the id of its MLflow run.")
        path = _download(ref)
    check_encoder_fits(spec, path, weights)
    return path


def check_encoder_fits(spec: BackboneSpec, path: Path, weights: str | None = None) -> None:
    """Refuse an encoder pretrained for another backbone, or whose tensors do not fill the trunk."""
    weights = weights or f"{SSL_PREFIX}{path}"
    key = (str(path.resolve()), path.stat().st_mtime, spec.name)
    if key in _checked:
        return
    meta = read_meta(path)
    source = meta.get("backbone") if meta else None
    if source is not None and source != spec.name:
        raise ConfigError(
            f"weights={weights}: this SSL encoder was pretrained with backbone {source!r} (its "
            f"{path.with_suffix('.json').name} says so), but the requested backbone is {spec.name!r}. Set "
            f"backbone={source}, or pretrain an encoder for it: medtune pretrain --backbone {spec.name} ...")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise ConfigError(f"weights={weights}: cannot load the SSL encoder {path} ({load_error_text(error)}). It "
                          f"must be the {ENCODER_FILE} that `medtune pretrain` wrote.") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights={weights}: {path} does not hold a state dict (name -> tensor).")
    problems = describe_mismatch({k: tuple(v.shape) for k, v in state.items()}, _trunk_shapes(spec),
                                 found_as="encoder", report_extra=True)
    if problems:
        origin = (f"pretrained with backbone {source!r}" if source else
                  f"backbone unknown: no {path.with_suffix('.json').name} beside it")
        raise ConfigError(f"weights={weights}: the SSL encoder ({origin}) does not fit the requested backbone "
                          f"{spec.name!r}: {'; '.join(problems)}. Use the backbone it was pretrained with, or "
                          f"pretrain one for {spec.name}.")
    _checked[key] = None


def _trunk_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    """The trunk's tensor shapes, from a trunk built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        trunk = build_trunk(spec)
    return {k: tuple(v.shape) for k, v in trunk.state_dict().items()}


def _download(run_id: str) -> Path:
    """The encoder of MLflow run ``run_id``, downloaded once into the weights cache."""
    cache = weights_dir() / "ssl" / run_id
    if (cache / ENCODER_FILE).is_file():
        return cache / ENCODER_FILE
    uri = os.environ.get(TRACKING_URI_ENV)
    if not uri:
        raise ConfigError(f"weights=ssl:{run_id} looks like an MLflow run id, but ${TRACKING_URI_ENV} is not set, "
                          "so there is no store to find it in. Set it to the store `medtune pretrain` logged to "
                          "(e.g. sqlite:///.../results/mlflow.db), or give the encoder.pt path instead.")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        client.get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"weights=ssl:{run_id}: the SSL encoder's MLflow run {run_id} does not exist in the "
                          f"tracking store {uri} ({str(error)[:200]}). Check the run id and "
                          f"${TRACKING_URI_ENV}.") from error
    except Exception as error:  # an unreachable store raises many types
        raise ConfigError(f"weights=ssl:{run_id}: cannot reach the MLflow tracking store {uri} "
                          f"({type(error).__name__}: {str(error)[:200]}).") from error
    names = {Path(a.path).name for a in client.list_artifacts(run_id, ARTIFACT_DIR)}
    if ENCODER_FILE not in names:
        raise ConfigError(f"weights=ssl:{run_id}: MLflow run {run_id} in {uri} has no {ARTIFACT_DIR}/{ENCODER_FILE} "
                          "artifact. Is it a `medtune pretrain` run (a finished one)?")
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=cache.parent))
    try:
        local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, str(staging)))
        try:
            os.replace(local, cache)  # atomic: concurrent trials on one node download at most once each
        except OSError:
            if not (cache / ENCODER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache / ENCODER_FILE


class SslEncoder(WeightSource):
    """``ssl:<encoder.pt, its folder, or an MLflow run id>``: an encoder from ``medtune pretrain``,
    checked against the backbone before any training; its images are preprocessed as in pretraining."""

    def recognises(self, spec: BackboneSpec, value: str) -> bool:
        return value.startswith(SSL_PREFIX)

    def check(self, spec: BackboneSpec, value: str) -> None:
        if not value[len(SSL_PREFIX):].strip():
            raise ConfigError(f"weights={value!r} names no SSL encoder: use ssl:<encoder.pt path> or ssl:<MLflow "
                              "run id> of a `medtune pretrain` run.")

    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        return resolve_ssl_encoder(spec, value[len(SSL_PREFIX):])

    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        return INPUT_PREPROCESSING


register_weight_source(SslEncoder("ssl", "an encoder pretrained by `medtune pretrain`",
                                  form="ssl:<encoder file or MLflow run id>"))
