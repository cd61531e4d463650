"""What a pretraining command is asked to do and what it gives back, shared by the single run
(``run``) and the Tune search (``search``): the request, the outcome, the experiment's name, the
tracking store, the output folder, and the encoder's MLflow artifacts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.pretrain.encoder import ARTIFACT_DIR, ENCODER_FILE, META_FILE
from tuner.pretrain.train import RECONSTRUCTIONS_FILE
from tuner.tracking import TrackingStore, open_store


@dataclass
class PretrainRequest:
    """The options of ``medtune pretrain``, as a value (the CLI builds one; so can a script)."""

    dataset: str
    config: dict[str, Any] = field(default_factory=dict)  # pretraining parameters given (the rest default)
    data_root: str | None = None
    storage: str = "results"
    experiment: str | None = None
    tracking_uri: str | None = None
    out: str | None = None
    # --search: Ray Tune over latent_dim, beta, lr (those in ``config`` stay pinned)
    search: bool = False
    num_samples: int = 8
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    grace_period: int = 1
    reduction_factor: int = 2
    search_seed: int = 0


@dataclass
class PretrainOutcome:
    """Where the encoder is (file and MLflow run) and how it scored, for the CLI's summary."""

    experiment: str
    tracking_uri: str
    run_id: str  # the run whose artifacts hold the encoder (a search's parent run)
    encoder_path: Path
    best: dict[str, Any]  # the best epoch's metrics (of the best trial, for a search)
    history: list[dict[str, float]]  # per-epoch metrics (of the best trial)
    config: dict[str, Any]
    trials: int = 1
    errored: int = 0
    seconds: float = 0.0


def experiment_name(request: PretrainRequest, config: dict[str, Any]) -> str:
    """``--experiment``, else ``pretrain-<backbone>-<data set>-<time>`` (unique per start)."""
    return request.experiment or (f"pretrain-{config['backbone']}-{Path(request.dataset).stem}-"
                                  f"{time.strftime('%Y%m%d-%H%M%S')}")


def storage_path(request: PretrainRequest) -> Path:
    """The results folder, absolute (Tune and the SQLite store both need it so)."""
    return Path(request.storage).expanduser().resolve()


def open_pretrain_store(request: PretrainRequest, name: str) -> TrackingStore:
    """The MLflow experiment ``name``, in the store ``medtune tune`` would choose for this storage."""
    return open_store(storage_path(request), name, request.tracking_uri)


def output_folder(request: PretrainRequest, name: str) -> Path:
    """Where the encoder is written (``--out``, else ``<storage>/<experiment>``); an existing encoder
    there is refused, since a study may already point at it."""
    out = Path(request.out).expanduser().resolve() if request.out else storage_path(request) / name
    if (out / ENCODER_FILE).exists():
        raise ConfigError(f"{out / ENCODER_FILE} already exists; choose another --out or --experiment (an encoder "
                          "is never overwritten).")
    return out


def log_encoder(client: Any, run_id: str, folder: Path) -> None:
    """The encoder (``encoder/encoder.pt`` + ``encoder.json``, what ``weights=ssl:<run id>`` downloads)
    and its reconstructions, as artifacts of ``run_id``."""
    client.log_artifact(run_id, str(folder / ENCODER_FILE), artifact_path=ARTIFACT_DIR)
    client.log_artifact(run_id, str(folder / META_FILE), artifact_path=ARTIFACT_DIR)
    client.log_artifact(run_id, str(folder / RECONSTRUCTIONS_FILE))
