"""The frozen-prefix feature cache: same results as recomputing (bit for bit on CPU), rebuilt when
the frozen prefix changes, refused where it would not be the same computation, and resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.sessions import CrashAfter
from tuner.models import build_classifier, get_backbone
from tuner.training import trial as trial_module
from tuner.training.checkpoint import BEST_MODEL_FILE, STATE_FILE
from tuner.training.epoch_plan import EpochPlanner
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial
from tuner.training.trunk_split import split_trunk

# batch 20 over 96 training images: four full batches and a partial one of 16, so both batch sizes
# the cache stores are exercised; dropout in the head draws from the global random stream.
BASE = {"backbone": "resnet18", "head": "convskip", "kernel_size": 3, "filters": 2, "dropout": 0.2,
        "image_size": 28, "batch_size": 20, "lr": 0.01, "epochs": 3, "augment": False, "seed": 7}


@pytest.fixture(scope="module")
def start_file(module_tmp_factory) -> str:
    """A fixed random ResNet-18 trunk saved as a state-dict file (a stand-in for pretrained weights)."""
    torch.manual_seed(21)
    trunk = get_backbone("resnet18").build(weights=None)
    trunk.fc = torch.nn.Identity()
    path = module_tmp_factory.mktemp("weights") / "resnet18_start.pt"
    torch.save(trunk.state_dict(), path)
    return str(path)


class _Caches(list):
    """Records every EpochPlanner run_trial makes."""

    def __call__(self, *args, **kwargs):
        cache = EpochPlanner(*args, **kwargs)
        self.append(cache)
        return cache


def _run(config, data, out: Path, monkeypatch, *, cache: bool, session=None):
    monkeypatch.setenv("MEDTUNE_FEATURE_CACHE", "1" if cache else "0")
    caches = _Caches()
    monkeypatch.setattr(trial_module, "EpochPlanner", caches)
    session = session or LocalSession(out)
    run_trial(config, data, session)
    state = torch.load(out / "checkpoint" / STATE_FILE, weights_only=True)
    best = torch.load(out / "checkpoint" / BEST_MODEL_FILE, weights_only=True)
    return session.history, state, best, caches[0]


def _assert_same_run(a, b):
    history_a, state_a, best_a, _ = a
    history_b, state_b, best_b, _ = b
    assert history_a == history_b  # every reported metric of every epoch, exactly
    for key, value in state_a["model"].items():
        assert torch.equal(value, state_b["model"][key]), key
    for key, value in best_a.items():
        assert torch.equal(value, best_b[key]), key
    buffers_a = [t for s in state_a["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)]
    buffers_b = [t for s in state_b["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)]
    assert len(buffers_a) == len(buffers_b)
    assert all(torch.equal(x, y) for x, y in zip(buffers_a, buffers_b, strict=True))
    assert torch.equal(state_a["loader_rng"], state_b["loader_rng"]) and torch.equal(state_a["torch_rng"],
                                                                                     state_b["torch_rng"])


@pytest.mark.parametrize("extra", [{"strategy": "lp"}, {"strategy": "topk", "unfreeze": 1}],
                         ids=["lp", "topk1"])
def test_cached_training_is_bit_identical_to_recomputing(extra, small_data, start_file, tmp_path, monkeypatch):
    config = {**BASE, "weights": start_file, **extra}
    cached = _run(config, small_data, tmp_path / "cached", monkeypatch, cache=True)
    recomputed = _run(config, small_data, tmp_path / "recomputed", monkeypatch, cache=False)
    assert cached[3].builds == 1 and recomputed[3].builds == 0
    _assert_same_run(cached, recomputed)


def test_densenet_linear_probe_is_bit_identical(small_data, tmp_path, monkeypatch):
    config = {**BASE, "backbone": "densenet121", "weights": "none", "strategy": "lp", "image_size": 32, "epochs": 2}
    cached = _run(config, small_data, tmp_path / "cached", monkeypatch, cache=True)
    recomputed = _run(config, small_data, tmp_path / "recomputed", monkeypatch, cache=False)
    assert cached[3].builds == 1
    _assert_same_run(cached, recomputed)


def test_cache_is_rebuilt_when_the_frozen_prefix_changes(small_data, start_file, tmp_path, monkeypatch):
    """lp_ft: cached while probing, recomputed once everything trains. g_lf: a new prefix every epoch."""
    lp_ft = {**BASE, "weights": start_file, "strategy": "lp_ft", "lp_epochs": 2, "epochs": 3}
    cached = _run(lp_ft, small_data, tmp_path / "a", monkeypatch, cache=True)
    assert cached[3].builds == 1 and cached[3].refused == "the whole trunk trains"
    _assert_same_run(cached, _run(lp_ft, small_data, tmp_path / "b", monkeypatch, cache=False))

    g_lf = {**BASE, "weights": start_file, "strategy": "g_lf", "unfreeze_every": 1, "epochs": 3}
    cached = _run(g_lf, small_data, tmp_path / "c", monkeypatch, cache=True)
    assert cached[3].builds == 3  # head only, then layer4, then layer3+layer4: three different prefixes
    _assert_same_run(cached, _run(g_lf, small_data, tmp_path / "d", monkeypatch, cache=False))


@pytest.mark.parametrize(("extra", "builds", "reason"), [
    ({"strategy": "lp", "augment": True}, 0, "augmented"),
    ({"strategy": "ft"}, 0, "whole trunk"),
    # g_fl: epoch 1 trains the head alone (cached); epoch 2 trains the stem, not a suffix
    ({"strategy": "g_fl", "unfreeze_every": 1, "epochs": 2}, 1, "not a suffix"),
])
def test_cache_is_refused_where_the_prefix_is_not_fixed(extra, builds, reason, small_data, start_file, tmp_path,
                                                        monkeypatch):
    config = {**BASE, "weights": start_file, "epochs": 1, **extra}
    *_, cache = _run(config, small_data, tmp_path, monkeypatch, cache=True)
    assert cache.builds == builds and reason in cache.refused


def test_cache_respects_its_memory_limit(small_data, start_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_FEATURE_CACHE_MAX_GB", "1e-6")  # about 1 KB: less than the outputs
    *_, cache = _run({**BASE, "weights": start_file, "strategy": "lp", "epochs": 1}, small_data, tmp_path,
                     monkeypatch, cache=True)
    assert cache.builds == 0 and "GiB" in cache.refused


def test_resume_with_the_cache_is_bit_exact(small_data, start_file, tmp_path, monkeypatch):
    config = {**BASE, "weights": start_file, "strategy": "lp"}
    uninterrupted = _run(config, small_data, tmp_path / "a", monkeypatch, cache=True)
    with pytest.raises(KeyboardInterrupt):
        _run(config, small_data, tmp_path / "b", monkeypatch, cache=True, session=CrashAfter(tmp_path / "b", 1))
    resumed = _run(config, small_data, tmp_path / "b", monkeypatch, cache=True,
                   session=LocalSession(tmp_path / "b", resume=True))
    assert resumed[3].builds == 1
    assert [r["epoch"] for r in resumed[0]] == [2, 3]
    _assert_same_run((uninterrupted[0][1:], *uninterrupted[1:]), resumed)


@pytest.mark.parametrize(("backbone", "size"), [("resnet18", 28), ("densenet121", 32)])
def test_split_trunk_recomposes_the_trunk(backbone, size):
    torch.manual_seed(0)
    model = build_classifier(backbone=backbone, weights="none", head="linear", num_outputs=2).eval()
    images = torch.randn(4, 3, size, size)
    with torch.no_grad():
        expected = model.trunk(images)
        for first in range(1, model.num_groups + 1):
            model.set_trainable_groups(range(first, model.num_groups))
            split = split_trunk(model, first)
            assert split is not None, first
            assert torch.equal(split.suffix(split.prefix(images)), expected), first


def test_split_trunk_refuses_a_forward_that_reuses_its_input():
    """A skip connection from the input across the cut: no single tensor separates the two parts."""
    from tuner.models.registry import LayerGroups

    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.b(self.a(x)) + x

    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    model.trunk = Skip()
    model.layer_groups = LayerGroups(("a", "b"), (("a",), ("b",)))
    assert split_trunk(model, 1) is None
