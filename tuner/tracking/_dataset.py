"""A trial's data set as an MLflow dataset input: what fills the runs table's Dataset column and lets
``dataset.name`` / ``dataset.digest`` filters find every run trained on one data set.

The record is built once, on the driver, from the decoded arrays (``dataset_record``), kept as plain
strings (the trial logger is pickled by Tune, and the search file stores it as JSON for ``medtune
sync``), and turned into MLflow's entity when a trial's run is created (``dataset_input``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

if TYPE_CHECKING:
    from tuner.data import DatasetSplits

DATASET_CONTEXT = "train+val+test"  # a trial trains, selects and scores on the one data set
SPLITS = ("train", "val", "test")


def dataset_record(data: DatasetSplits, source: str) -> dict[str, str]:
    """The MLflow dataset of ``data``: its name, a digest of every split's images and labels (two runs
    show the same digest exactly when they saw the same arrays in the same splits), its ``source`` (the
    file or folder it was read from), the split sizes and classes (profile) and the arrays' types
    (schema). Plain strings, the fields of ``mlflow.entities.Dataset``."""
    digest = hashlib.sha256()
    for name in SPLITS:
        split = data.split(name)
        digest.update(name.encode())
        for array in (*_image_arrays(split.images), split.labels):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(memoryview(array.ravel(order="C")).cast("B"))
    first = data.train.images[0]  # of a source whose images differ in size: the first one's
    profile = {**{f"{name}_size": len(data.split(name)) for name in SPLITS},
               "num_classes": data.num_classes, "task": data.task, "class_names": list(data.class_names),
               "image_shape": list(first.shape)}
    labels = data.train.labels
    schema = {"mlflow_tensorspec": {
        "features": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": str(first.dtype),
                                                                   "shape": [-1, *first.shape]}}]),
        "targets": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": str(labels.dtype),
                                                                  "shape": [-1, *labels.shape[1:]]}}])}}
    return {"name": data.name, "digest": digest.hexdigest()[:12], "source_type": "local",
            "source": json.dumps({"uri": source}), "schema": json.dumps(schema), "profile": json.dumps(profile)}


def dataset_input(record: Mapping[str, str]) -> DatasetInput:
    """``record`` (``dataset_record``) as the input a run logs (``MlflowClient.log_inputs``)."""
    return DatasetInput(Dataset(**record), tags=[InputTag(MLFLOW_DATASET_CONTEXT, DATASET_CONTEXT)])


def _image_arrays(images: Any) -> Iterable[Any]:
    """One (N, H, W[, C]) array, or the per-image arrays of a source whose images differ in size."""
    return [images] if hasattr(images, "dtype") else images
