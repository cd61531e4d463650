"""Frozen-prefix outputs shared across trials (tuner/training/feature_store.py): a trial that reads
them gives the same numbers as one that recomputes them, and a key differing in any one thing the
outputs depend on misses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuner.models import get_backbone
from tuner.training import trial as trial_module
from tuner.training.epoch_plan import EpochPlanner
from tuner.training.feature_store import FeatureStore
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

BASE = {"backbone": "resnet18", "head": "linear", "dropout": 0.2, "image_size": 28, "batch_size": 20,
        "lr": 0.01, "epochs": 2, "augment": False, "seed": 7, "strategy": "lp"}


def _weights(folder: Path, seed: int) -> str:
    torch.manual_seed(seed)
    trunk = get_backbone("resnet18").build(weights=None)
    trunk.fc = torch.nn.Identity()
    path = folder / f"resnet18_{seed}.pt"
    torch.save(trunk.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def key_data(breastmnist, module_tmp_factory):
    """24 training, 10 validation, 10 test images: a key test needs outputs, not learning."""
    from tuner.data import load_dataset, save_npz_subset

    path = module_tmp_factory.mktemp("tiny") / "tiny.npz"
    return load_dataset(str(save_npz_subset(breastmnist, path, {"train": (8, 16), "val": (5, 5), "test": (5, 5)})))


@pytest.fixture(scope="module")
def weight_files(module_tmp_factory) -> tuple[str, str]:
    """Two fixed ResNet-18 trunks (stand-ins for two sets of pretrained weights)."""
    folder = module_tmp_factory.mktemp("weights")
    return _weights(folder, 21), _weights(folder, 22)


class _Planners(list):
    """Records every EpochPlanner run_trial makes."""

    def __call__(self, *args, **kwargs):
        planner = EpochPlanner(*args, **kwargs)
        self.append(planner)
        return planner


def _trial(config, data, out: Path, monkeypatch, store: Path | None):
    if store is None:
        monkeypatch.setenv("MEDTUNE_FEATURE_CACHE_SHARED", "0")
    else:
        monkeypatch.setenv("MEDTUNE_FEATURE_CACHE_SHARED", "1")
        monkeypatch.setenv("MEDTUNE_FEATURE_CACHE_DIR", str(store))
    planners = _Planners()
    monkeypatch.setattr(trial_module, "EpochPlanner", planners)
    session = LocalSession(out)
    run_trial(config, data, session)
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    return session.history, state["model"], planners[0]


def test_a_trial_reading_the_store_matches_one_recomputing(small_data, weight_files, tmp_path, monkeypatch):
    store = tmp_path / "store"
    config = {**BASE, "weights": weight_files[0]}
    first = _trial(config, small_data, tmp_path / "first", monkeypatch, store)
    # Another trial of the search: other head settings and learning rate, the same frozen prefix.
    other = {**config, "lr": 0.05, "dropout": 0.0, "seed": 3}
    reading = _trial(other, small_data, tmp_path / "reading", monkeypatch, store)
    recomputing = _trial(other, small_data, tmp_path / "recomputing", monkeypatch, None)
    assert (first[2].builds, first[2].loads) == (1, 0)
    assert (reading[2].builds, reading[2].loads) == (0, 1)
    assert recomputing[2].store is None and recomputing[2].builds == 1
    assert len(list(store.glob("*.pt"))) == 1
    assert reading[0] == recomputing[0]  # every metric of every epoch, exactly
    for key, value in reading[1].items():
        assert torch.equal(value, recomputing[1][key]), key


@pytest.mark.parametrize("change", ["backbone", "weights", "image_size", "preprocessing", "frozen_depth",
                                    "transform", "data", "batch_size", "random_init_seed"])
def test_a_key_differing_in_one_component_misses(change, key_data, weight_files, tmp_path, monkeypatch):
    store = tmp_path / "store"
    config = {**BASE, "weights": weight_files[0], "epochs": 1, "batch_size": 8}
    data = key_data
    first = _trial(config, data, tmp_path / "a", monkeypatch, store)
    assert first[2].builds == 1
    if change == "backbone":
        config = {**config, "weights": "none"}
        _trial(config, data, tmp_path / "b0", monkeypatch, store)  # a random resnet18 trunk, seed 7
        config = {**config, "backbone": "resnet18_small"}  # the same seed, another architecture
    elif change == "weights":
        config = {**config, "weights": weight_files[1]}
    elif change == "image_size":
        config = {**config, "image_size": 32}
    elif change == "preprocessing":
        monkeypatch.setattr(trial_module, "preprocessing_for", _other_preprocessing)
    elif change == "frozen_depth":
        config = {**config, "strategy": "topk", "unfreeze": 1}
    elif change == "transform":
        config = {**config, "image_size": 24, "resize_size": 28}
        _trial(config, data, tmp_path / "b0", monkeypatch, store)
        config = {**config, "resize_size": 32}  # same output size, another resize before the crop
    elif change == "data":
        data = _fewer_training_images(key_data, tmp_path)
    elif change == "batch_size":
        config = {**config, "batch_size": 6}
    elif change == "random_init_seed":
        config = {**config, "weights": "none"}
        _trial(config, data, tmp_path / "b0", monkeypatch, store)
        config = {**config, "seed": 8}  # a random trunk: another seed is another prefix
    entries = len(list(store.glob("*.pt")))
    second = _trial(config, data, tmp_path / "b", monkeypatch, store)
    assert (second[2].builds, second[2].loads) == (1, 0), change
    assert len(list(store.glob("*.pt"))) == entries + 1


def _other_preprocessing(spec, weights):
    from tuner.spec import Preprocessing

    return Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear", crop_pct=None,
                         source="test")


def _fewer_training_images(data, tmp_path):
    from tuner.data import load_dataset, save_npz_subset

    path = save_npz_subset(data, tmp_path / "fewer.npz", {"train": (8, 15), "val": (5, 5), "test": (5, 5)})
    return load_dataset(str(path))


def test_an_unreadable_entry_is_recomputed_and_replaced(key_data, weight_files, tmp_path, monkeypatch):
    store = tmp_path / "store"
    config = {**BASE, "weights": weight_files[0], "epochs": 1, "batch_size": 8}
    first = _trial(config, key_data, tmp_path / "a", monkeypatch, store)
    (entry,) = store.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:1000])  # truncated, as by a crash of a non-atomic writer
    second = _trial(config, key_data, tmp_path / "b", monkeypatch, store)
    assert (second[2].builds, second[2].loads) == (1, 0)
    assert second[0] == first[0]
    third = _trial(config, key_data, tmp_path / "c", monkeypatch, store)
    assert third[2].loads == 1 and not list(store.glob(".writing-*"))


def test_sharing_is_off_without_a_folder_or_when_turned_off(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTUNE_FEATURE_CACHE_DIR", raising=False)
    monkeypatch.delenv("MEDTUNE_FEATURE_CACHE_SHARED", raising=False)
    assert FeatureStore.for_trial(None) is None
    assert FeatureStore.for_trial(tmp_path).folder == tmp_path
    monkeypatch.setenv("MEDTUNE_FEATURE_CACHE_SHARED", "0")
    assert FeatureStore.for_trial(tmp_path) is None
