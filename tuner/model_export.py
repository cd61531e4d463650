"""The search's best trial as an MLflow PyTorch model on the search's parent run, so that it can be
loaded (``mlflow.pytorch.load_model``, or ``mlflow.pyfunc.load_model``), registered and served.

The model is ``tuner.ensemble_model``'s ``EnsembleModel`` of the one trial: raw images in, exactly as
the data set holds them (a uint8 batch ``(N, H, W)`` or ``(N, H, W, C)``), class probabilities out. Its
preprocessing is built in: the very evaluation transform the trial validated and tested with (resize,
channels, the starting weights' mean and std: ``tuner.spec.Preprocessing``), so it gives the
probabilities the trial scored. The weights are the trial's best-validation epoch, from the checkpoint
it kept (``best_model.pt``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec

from tuner import __version__
from tuner._torchvision import torchvision
from tuner.data import DatasetSplits
from tuner.ensemble_model import EnsembleModel, export_ensemble, load_ensemble
from tuner.errors import ConfigError
from tuner.search_summary import SearchOutcome, ran_full_budget
from tuner.tracking import TRACKING_URI_ENV, redact, trial_config_id

BEST_MODEL_NAME = "best_model"  # the search's best trial, on the parent run
CONFIRMED_MODEL_NAME = "confirmed_model"  # the confirmation stage's answer, on the same parent run
MODEL_URI_TAG = "medtune.model_uri"  # on the parent run: where the logged best model is
MODEL_TRIAL_TAG = "medtune.model_trial_id"  # and which trial it is


def trial_model(trial_dir: Path, data: DatasetSplits, name: str) -> EnsembleModel:
    """The Tune trial in ``trial_dir`` as it was at its best validation epoch: an ensemble of this one
    member (``tuner.ensemble_model``: the architecture rebuilt from the trial's config, the weights of
    its newest checkpoint's ``best_model.pt``, its own evaluation transform), on the CPU."""
    with tempfile.TemporaryDirectory(prefix="medtune-model-") as folder:
        export_ensemble([trial_dir], [name], Path(folder) / "model", task=data.task, num_outputs=data.num_classes)
        return load_ensemble(Path(folder) / "model").eval()


def log_search_model(outcome: SearchOutcome, data: DatasetSplits, register: str | None = None) -> None:
    """Log the search's best trial (by validation: ``outcome.best``) on its parent run as
    ``BEST_MODEL_NAME``, registered as ``register`` when given; records where in ``outcome``
    (``model_uri``, ``registered``). A store that fails is reported, not raised."""
    if outcome.best is None or outcome.best_trial_dir is None:
        return
    info = _logged(outcome.tracking_uri, outcome.parent_run_id, outcome.best_trial_dir, data,
                   str(outcome.best["trial_id"]), BEST_MODEL_NAME, register)
    if info is not None:
        outcome.model_uri, outcome.registered = info.model_uri, _registered(info, register)


def confirmed_best(results: Iterable[Any]) -> Any | None:
    """The confirmation stage's answer (a Tune ``Result``): of the configurations whose replicates all
    completed, the one with the best mean validation score (``best_score``), and of its replicates the
    one whose own validation score is best; None when no configuration completed them all. A
    configuration that lost a replicate (an error, a divergence) is not judged on its survivors: its mean
    would rest on fewer seeds than the others'."""
    groups: dict[str, list[Any]] = {}
    for result in results:
        if result.config is not None:
            groups.setdefault(trial_config_id(result.config), []).append(result)
    complete = [replicates for replicates in groups.values() if all(ran_full_budget(r) for r in replicates)]
    if not complete:
        return None
    chosen = max(complete, key=lambda replicates: float(np.mean([r.metrics["best_score"] for r in replicates])))
    return max(chosen, key=lambda r: r.metrics["best_score"])


def log_confirmed_model(results: Iterable[Any], tracking_uri: str, parent_run_id: str, data: DatasetSplits,
                        register: str | None = None) -> tuple[str | None, str | None]:
    """Log the confirmation stage's answer (``confirmed_best``) on the search's parent run as
    ``CONFIRMED_MODEL_NAME``, registered as ``register`` when given; returns its model URI and
    registered version (None where there is none, or the store failed: reported, not raised)."""
    top = confirmed_best(results)
    if top is None:
        return None, None
    info = _logged(tracking_uri, parent_run_id, Path(top.path), data, str(top.metrics.get("trial_id")),
                   CONFIRMED_MODEL_NAME, register)
    return (info.model_uri, _registered(info, register)) if info is not None else (None, None)


def _logged(tracking_uri: str, run_id: str, trial_dir: Path, data: DatasetSplits, trial_id: str, name: str,
            register: str | None) -> ModelInfo | None:
    """``log_trial_model``, with a store that fails, or a trial folder that cannot give the model,
    reported rather than raised: the results are safe in the Tune folder, and the search or stage has
    done its work."""
    try:
        return log_trial_model(tracking_uri, run_id, trial_dir, data, trial_id=trial_id, name=name, register=register)
    except ConfigError as error:  # the trial's folder, not the store: e.g. no weights of its best epoch kept
        print(f"medtune: the model {name!r} was not logged: {error}", file=sys.stderr, flush=True)
        return None
    except Exception as error:  # mlflow raises many types for a store that fails
        reason = str(error).replace(tracking_uri, redact(tracking_uri))[:300]  # the URI may hold a password
        print(f"medtune: could not log the model {name!r} to MLflow ({type(error).__name__}: {reason}).",
              file=sys.stderr, flush=True)
        return None


def _registered(info: ModelInfo, register: str | None) -> str | None:
    return f"{register} version {info.registered_model_version}" if register else None


def log_trial_model(tracking_uri: str, run_id: str, trial_dir: Path, data: DatasetSplits, *, trial_id: str,
                    name: str = BEST_MODEL_NAME, register: str | None = None) -> ModelInfo:
    """Log the trial's model (``trial_model``) on the run ``run_id`` as an MLflow PyTorch model named
    ``name``, with a signature (uint8 images of any size in, float32 probabilities out) and a few raw
    test images as its input example; ``register`` also registers it as a new version of that registered
    model. The run is tagged with the model's URI and trial (``MODEL_URI_TAG``, ``MODEL_TRIAL_TAG``)."""
    model = trial_model(trial_dir, data, trial_id)
    example = _input_example(data.test.images)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, *example.shape[3:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.num_classes))]))
    with _tracking_uri(tracking_uri):
        info = mlflow.pytorch.log_model(
            model, name=name, run_id=run_id, signature=signature, input_example=example,
            registered_model_name=register, pip_requirements=_requirements(),
            # pickled, not torch.export's pt2: the per-image transform is Python, not a traced graph
            serialization_format="pickle",
            metadata={"medtune_trial_id": trial_id, "trial_dir": str(trial_dir), "task": data.task,
                      "class_names": list(data.class_names), "dataset": data.name})
    client = mlflow.MlflowClient(tracking_uri)
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    client.set_tag(run_id, MODEL_TRIAL_TAG, trial_id)
    return info


def _input_example(images: Any) -> np.ndarray:
    """A few raw test images as the data hold them (one, where the images differ in size)."""
    if hasattr(images, "shape"):
        return np.ascontiguousarray(images[:4])
    return np.asarray(images[0])[None]


def _requirements() -> list[str]:
    """What loading the model needs, stated rather than inferred (MLflow's inference loads the model in a
    subprocess: slow, and it misses ``medtune``, whose classes the pickled model is made of)."""
    return [f"medtune=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"torchvision=={torchvision.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``log_model``) reads the process-wide tracking URI: set it for the call only.
    ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``, which mirrors an explicit URI, so the
    variable is what is restored (None unsets both), lest later commands resolve this store."""
    previous = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
