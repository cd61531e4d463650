"""Class imbalance: ``class_weights=balanced`` (loss weights from the training split's class counts,
scikit-learn's ``balanced`` convention) and ``sampler=balanced`` (a seeded ``WeightedRandomSampler``),
each proven through ``run_trial`` on a skewed BreastMNIST subset (40 of one class, 8 of the other)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from tests.sessions import CrashAfter
from tuner.data import load_dataset, save_npz_subset
from tuner.errors import ConfigError
from tuner.training import trial as trial_module
from tuner.training.losses import FocalLoss, balanced_class_weights, check_class_weights, class_counts
from tuner.training.session import LocalSession

BASE = {"backbone": "resnet18", "weights": "none", "image_size": 28, "batch_size": 16, "lr": 0.01,
        "epochs": 2, "seed": 3}
COMMON, RARE = 40, 8


@pytest.fixture(scope="module")
def skewed(module_tmp_factory, breastmnist):
    path = save_npz_subset(breastmnist, module_tmp_factory.mktemp("skewed") / "skewed.npz",
                           {"train": (RARE, COMMON), "val": (8, 8), "test": (8, 8)})
    return load_dataset(str(path))


def _run(config: dict[str, Any], data, out: Path, session=None) -> tuple[list[dict], list[torch.nn.Module],
                                                                          list[torch.Tensor]]:
    """``run_trial`` with the loss it built and the targets it trained on recorded."""
    losses, targets = [], []
    real_build_loss = trial_module.build_loss

    def build_loss(*args, **kwargs):
        loss = real_build_loss(*args, **kwargs)
        loss.register_forward_pre_hook(lambda module, inputs: targets.append(inputs[1].detach().cpu().clone())
                                       if torch.is_grad_enabled() else None)
        losses.append(loss)
        return loss

    session = session or LocalSession(out)
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.setattr(trial_module, "build_loss", build_loss)
        try:
            trial_module.run_trial({**BASE, **config}, data, session)
        except KeyboardInterrupt:  # CrashAfter's simulated preemption
            pass
    return session.history, losses, targets


@pytest.mark.parametrize("labels", [np.array([0] * 30 + [1] * 6), np.array([0] * 5 + [1] * 11 + [2] * 2)])
def test_balanced_weights_are_scikit_learns(labels):
    classes = np.unique(labels)
    expected = compute_class_weight("balanced", classes=classes, y=labels)
    assert torch.allclose(balanced_class_weights(class_counts(labels, len(classes))),
                          torch.tensor(expected, dtype=torch.float32))


def test_a_class_without_training_images_is_refused():
    with pytest.raises(ConfigError, match="class 1 has no training image"):
        balanced_class_weights(class_counts(np.array([0, 0, 2]), 3))


def test_the_trial_loss_uses_the_training_splits_weights(skewed, tmp_path):
    history, losses, targets = _run({"class_weights": "balanced", "epochs": 1}, skewed, tmp_path / "w")
    counts = np.bincount(skewed.train.labels)
    assert sorted(counts) == [RARE, COMMON]
    expected = torch.tensor(len(skewed.train) / (2 * counts), dtype=torch.float32)  # 48/16 = 3 and 48/80 = 0.6
    assert torch.equal(losses[0].weight, expected)
    plain, plain_losses, _ = _run({"epochs": 1}, skewed, tmp_path / "n")
    assert plain_losses[0].weight is None
    assert history[0]["train_loss"] != plain[0]["train_loss"]  # the weights are felt by the loss
    # the weighted mean: the rare class's terms count 5 times as much as the common class's
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    terms = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = expected[labels]
    assert torch.allclose(losses[0](logits, labels), (w * terms).sum() / w.sum())


def test_focal_loss_takes_the_same_weights():
    weight = torch.tensor([3.0, 0.6])
    logits, labels = torch.randn(12, 2), torch.randint(0, 2, (12,))
    focal = FocalLoss("binary", gamma=0.0, alpha=None, weight=weight)  # gamma 0: cross-entropy
    assert torch.allclose(focal(logits, labels), torch.nn.CrossEntropyLoss(weight=weight)(logits, labels))


def test_the_balanced_sampler_draws_classes_about_equally(skewed, tmp_path):
    rare = int(np.argmin(np.bincount(skewed.train.labels)))
    _, _, balanced = _run({"sampler": "balanced"}, skewed, tmp_path / "b")
    _, _, shuffled = _run({}, skewed, tmp_path / "s")
    drawn, plain = torch.cat(balanced), torch.cat(shuffled)
    assert len(drawn) == len(plain) == 2 * (RARE + COMMON)  # as many draws per epoch as images
    assert (plain == rare).sum().item() == 2 * RARE  # a shuffle: each image once per epoch
    # balanced: each draw is the rare class with probability 1/2 (96 draws: sd 0.05)
    assert 0.35 < (drawn == rare).float().mean().item() < 0.65


def test_the_balanced_sampler_resumes_exactly(skewed, tmp_path):
    config = {"sampler": "balanced", "class_weights": "balanced", "augment": True}
    straight, _, straight_targets = _run(config, skewed, tmp_path / "straight")
    _run(config, skewed, tmp_path / "resumed", CrashAfter(tmp_path / "resumed", 1))
    resumed, _, resumed_targets = _run(config, skewed, tmp_path / "resumed", LocalSession(tmp_path / "resumed",
                                                                                          resume=True))
    assert [r["epoch"] for r in resumed] == [2]
    assert resumed[0] == straight[1]
    assert all(torch.equal(a, b) for a, b in zip(resumed_targets, straight_targets[len(resumed_targets):],
                                                 strict=True))


def test_stored_frozen_outputs_keep_the_balanced_draws(skewed, tmp_path, monkeypatch):
    """A linear probe trains on stored trunk outputs (tuner.training.epoch_plan): it must draw the same
    balanced batches as the image path."""
    config = {"sampler": "balanced", "strategy": "lp"}
    cached, _, cached_targets = _run(config, skewed, tmp_path / "cached")
    monkeypatch.setenv("MEDTUNE_FEATURE_CACHE", "0")
    images, _, image_targets = _run(config, skewed, tmp_path / "images")
    assert all(torch.equal(a, b) for a, b in zip(cached_targets, image_targets, strict=True))
    assert [r["train_loss"] for r in cached] == [r["train_loss"] for r in images]


def test_refusals(skewed, tmp_path):
    with pytest.raises(ConfigError, match="class_weights=balanced and focal_alpha"):
        _run({"loss": "focal", "focal_alpha": 0.25, "class_weights": "balanced"}, skewed, tmp_path / "x")
    with pytest.raises(ConfigError, match="multi-label"):
        check_class_weights("multilabel", {"class_weights": "balanced"})
    with pytest.raises(ConfigError, match="sampler='sometimes' is not allowed"):
        _run({"sampler": "sometimes"}, skewed, tmp_path / "y")
