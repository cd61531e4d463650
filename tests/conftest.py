"""Shared fixtures. Tests run on the real BreastMNIST file, found through $MEDTUNE_DATA_ROOT; when it
is unset, the tests point it at ../shared/data/medmnist (where this project's machines keep it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MEDTUNE_DATA_ROOT", str(REPO.parent / "shared" / "data" / "medmnist"))


@pytest.fixture(scope="session")
def breastmnist():
    from tuner.data import load_dataset

    return load_dataset("breastmnist")


def subset_npz(data, path: Path, per_class: dict[str, tuple[int, int]]) -> Path:
    """Save the first (n_class0, n_class1) images of each split of the real data set, with the
    official keys, so tests train on real images but quickly."""
    arrays = {}
    for split, (n0, n1) in per_class.items():
        source = data.split(split)
        keep = np.concatenate([np.flatnonzero(source.labels == 0)[:n0], np.flatnonzero(source.labels == 1)[:n1]])
        keep.sort()
        arrays[f"{split}_images"] = source.images[keep]
        arrays[f"{split}_labels"] = source.labels[keep].reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, breastmnist) -> Path:
    """A real-image BreastMNIST subset: 96 training, 40 validation, 40 test images."""
    return subset_npz(breastmnist, tmp_path_factory.mktemp("data") / "breastsmall.npz",
                      {"train": (32, 64), "val": (15, 25), "test": (15, 25)})


@pytest.fixture(scope="session")
def small_data(small_npz):
    from tuner.data import load_dataset

    return load_dataset(str(small_npz))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
