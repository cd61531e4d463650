"""Shared fixtures. Tests run on the real BreastMNIST file, found through $MEDTUNE_DATA_ROOT; when it
is unset, the tests point it at ../shared/data/medmnist (where this project's machines keep it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def ray_never_started() -> Iterator[None]:
    """Fail if the code inside starts Ray. ``ray.is_initialized()`` cannot tell: an earlier test's
    session-wide Ray (``ray_local``) may already be up, so ``ray.init`` itself is watched."""
    import ray

    original, calls = ray.init, []
    ray.init = lambda *args, **kwargs: calls.append(args) or original(*args, **kwargs)
    try:
        yield
    finally:
        ray.init = original
    assert calls == [], "Ray was started"
os.environ.setdefault("MEDTUNE_DATA_ROOT", str(REPO.parent / "shared" / "data" / "medmnist"))
# No test downloads a data set: a missing MedMNIST file is refused, not fetched (test_data_download.py
# turns this off for its own server on 127.0.0.1).
os.environ["MEDTUNE_OFFLINE"] = "1"


class ModuleFolders:
    """``tmp_path_factory.mktemp`` for one test module: its folders go when the module ends."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        """A new folder named after ``name`` (unique, as ``tmp_path_factory.mktemp``'s are)."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


@pytest.fixture(scope="module")
def module_tmp_factory(tmp_path_factory, request) -> Iterator[ModuleFolders]:
    """Folders for one test module's shared searches and trials, removed when the module ends.
    ``tmp_path_factory``'s folders live until the session ends, and a resnet18 trial leaves 130 MB of
    checkpoints: kept for the whole run they filled CI's disk (7 GB by the last module)."""
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield ModuleFolders(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def breastmnist():
    from tuner.data import load_dataset

    return load_dataset("breastmnist")


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, breastmnist) -> Path:
    """A real-image BreastMNIST subset: 96 training, 40 validation, 40 test images."""
    from tuner.data import save_npz_subset

    return save_npz_subset(breastmnist, tmp_path_factory.mktemp("data") / "breastsmall.npz",
                           {"train": (32, 64), "val": (15, 25), "test": (15, 25)})


@pytest.fixture(scope="session")
def small_data(small_npz):
    from tuner.data import load_dataset

    return load_dataset(str(small_npz))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, breastmnist):
    """A smaller real-image subset, for tests that run many trials: 32 training, 16 validation, 16 test."""
    from tuner.data import load_dataset, save_npz_subset

    return load_dataset(str(save_npz_subset(breastmnist, tmp_path_factory.mktemp("tiny") / "breasttiny.npz",
                                            {"train": (12, 20), "val": (8, 8), "test": (8, 8)})))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
