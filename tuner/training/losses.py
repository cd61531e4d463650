"""Training losses: cross-entropy (softmax; per-label sigmoid + BCE for multi-label) or focal loss.

Focal loss (Lin et al. 2017) down-weights easy examples: FL = -alpha_t (1 - p_t)^gamma log p_t, where
p_t is the probability given to the true class. With gamma = 0 and no alpha it is cross-entropy. alpha
weighs the positive class by alpha and the negative by 1 - alpha, so it is defined for binary and
multi-label tasks; a multi-label focal loss is torchvision's ``sigmoid_focal_loss``.

``class_weights=balanced`` weighs each class's loss terms by ``n / (num_classes * n_class)``, counted on
the trial's training split (scikit-learn's ``compute_class_weight("balanced")``), so that a rare class
counts as much as a common one; the mean over a batch is then the weighted mean (torch's
``CrossEntropyLoss(weight=...)`` convention). ``none`` leaves the loss exactly as it was.

Each loss is declared once in ``LOSSES`` with its own parameters; a new loss is one ``LOSSES.register``
call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from tuner._torchvision import torchvision
from tuner.data.splits import Task
from tuner.errors import ConfigError
from tuner.spec import Component, Param, Registry

FOCAL_GAMMA = Param("focal_gamma", (int, float), 2.0, "focal loss γ: how strongly easy examples are down-weighted "
                    "(0: cross-entropy)", low=0.0)
FOCAL_ALPHA = Param("focal_alpha", (int, float), None, "focal loss α: the positive class's weight, binary and "
                    "multi-label only (unset: no weighting)", low=0.0, high=1.0, low_open=True, high_open=True,
                    nullable=True)

CLASS_WEIGHTS = Param("class_weights", str, "none", "`balanced`: each class's loss weighted by n / (classes × its "
                      "training count) (scikit-learn's convention); `none`: unweighted",
                      choices=("none", "balanced"))


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class of a single-label split (classes absent from it count 0)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def balanced_class_weights(counts: Sequence[int] | np.ndarray) -> torch.Tensor:
    """``n / (num_classes * count)`` per class, as float32 (scikit-learn's ``balanced`` weights). A class
    with no training image has no weight to give; it is refused by name."""
    counts = np.asarray(counts, dtype=np.int64)
    if (counts == 0).any():
        raise ConfigError(f"class_weights=balanced: class {int(np.flatnonzero(counts == 0)[0])} has no training "
                          "image, so it has no frequency to weigh by. Use class_weights=none.")
    return torch.as_tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


@dataclass(frozen=True)
class LossSpec(Component):
    """A loss's one declaration: name, doc, parameters, and ``build(task, weight, **own_values)``
    returning the module (``weight``: per-class loss weights, or None)."""

    build: Callable[..., nn.Module] = field(kw_only=True)


LOSSES: Registry[LossSpec] = Registry("loss")


class FocalLoss(nn.Module):
    """Focal loss over softmax probabilities, or torchvision's sigmoid focal loss for multi-label tasks."""

    def __init__(self, task: Task, gamma: float, alpha: float | None, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.task, self.gamma, self.alpha = task, gamma, alpha
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "multilabel":
            return torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=-1 if self.alpha is None else self.alpha,
                                                      gamma=self.gamma, reduction="mean")
        log_p_true = functional.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        loss = -((1 - log_p_true.exp()) ** self.gamma) * log_p_true
        if self.alpha is not None:  # binary only (checked with the config)
            loss = torch.where(targets == 1, self.alpha, 1 - self.alpha) * loss
        if self.weight is not None:  # the weighted mean, as CrossEntropyLoss(weight=...) takes it
            weights = self.weight[targets]
            return (weights * loss).sum() / weights.sum()
        return loss.mean()


def _cross_entropy(task: Task, weight: torch.Tensor | None) -> nn.Module:
    return nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss(weight=weight)


def _focal(task: Task, weight: torch.Tensor | None, *, focal_gamma: float, focal_alpha: float | None) -> nn.Module:
    return FocalLoss(task, focal_gamma, focal_alpha, weight)


LOSSES.register(LossSpec("ce", "cross-entropy: softmax, or per-label sigmoid + BCE for multi-label tasks",
                         (CLASS_WEIGHTS,), build=_cross_entropy))
LOSSES.register(LossSpec("focal", "focal loss (Lin et al. 2017): cross-entropy that down-weights easy examples",
                         (FOCAL_GAMMA, FOCAL_ALPHA, CLASS_WEIGHTS), build=_focal))


def check_class_weights(task: Task, config: Mapping[str, Any]) -> None:
    """``class_weights=balanced`` weighs single-label classes, and says the same thing as ``focal_alpha``."""
    if config.get("class_weights") != "balanced":
        return
    if task == "multilabel":
        raise ConfigError("class_weights=balanced weighs the classes of single-label tasks; this one is multi-label "
                          "(an image has several labels). Use class_weights=none.")
    if config.get("focal_alpha") is not None:
        raise ConfigError(f"class_weights=balanced and focal_alpha={config['focal_alpha']!r} both weigh the classes. "
                          "Drop focal_alpha, or use class_weights=none.")


def build_loss(task: Task, config: Mapping[str, Any], counts: Sequence[int] | np.ndarray | None = None) -> nn.Module:
    """The loss ``config`` names (``config["loss"]``) for ``task``, with its own parameters from ``config``;
    ``counts`` are the training split's images per class, which ``class_weights=balanced`` weighs by."""
    spec = LOSSES.get(config["loss"])
    values = spec.own_values(config)
    balanced = values.pop("class_weights", "none") == "balanced"
    if balanced:
        check_class_weights(task, config)
        if counts is None:
            raise ValueError("class_weights=balanced needs the training split's class counts")
    return spec.build(task, balanced_class_weights(counts) if balanced else None, **values)


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Per-label sigmoid for multi-label tasks, softmax over classes otherwise."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)
