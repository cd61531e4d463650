"""Training losses: cross-entropy (softmax; per-label sigmoid + BCE for multi-label) or focal loss.

Focal loss (Lin et al. 2017) down-weights easy examples: FL = -alpha_t (1 - p_t)^gamma log p_t, where
p_t is the probability given to the true class. With gamma = 0 and no alpha it is cross-entropy. alpha
weighs the positive class by alpha and the negative by 1 - alpha, so it is defined for binary and
multi-label tasks; a multi-label focal loss is torchvision's ``sigmoid_focal_loss``.

Each loss is declared once in ``LOSSES`` with its own parameters; a new loss is one ``LOSSES.register``
call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from tuner._torchvision import torchvision
from tuner.data.splits import Task
from tuner.spec import Component, Param, Registry

FOCAL_GAMMA = Param("focal_gamma", (int, float), 2.0, "focal loss γ: how strongly easy examples are down-weighted "
                    "(0: cross-entropy)", low=0.0)
FOCAL_ALPHA = Param("focal_alpha", (int, float), None, "focal loss α: the positive class's weight, binary and "
                    "multi-label only (unset: no weighting)", low=0.0, high=1.0, low_open=True, high_open=True,
                    nullable=True)


@dataclass(frozen=True)
class LossSpec(Component):
    """A loss's one declaration: name, doc, parameters, and ``build(task, **own_values)`` returning the module."""

    build: Callable[..., nn.Module] = field(kw_only=True)


LOSSES: Registry[LossSpec] = Registry("loss")


class FocalLoss(nn.Module):
    """Focal loss over softmax probabilities, or torchvision's sigmoid focal loss for multi-label tasks."""

    def __init__(self, task: Task, gamma: float, alpha: float | None) -> None:
        super().__init__()
        self.task, self.gamma, self.alpha = task, gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "multilabel":
            return torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=-1 if self.alpha is None else self.alpha,
                                                      gamma=self.gamma, reduction="mean")
        log_p_true = functional.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        loss = -((1 - log_p_true.exp()) ** self.gamma) * log_p_true
        if self.alpha is not None:  # binary only (checked with the config)
            loss = torch.where(targets == 1, self.alpha, 1 - self.alpha) * loss
        return loss.mean()


def _cross_entropy(task: Task) -> nn.Module:
    return nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()


def _focal(task: Task, *, focal_gamma: float, focal_alpha: float | None) -> nn.Module:
    return FocalLoss(task, focal_gamma, focal_alpha)


LOSSES.register(LossSpec("ce", "cross-entropy: softmax, or per-label sigmoid + BCE for multi-label tasks",
                         build=_cross_entropy))
LOSSES.register(LossSpec("focal", "focal loss (Lin et al. 2017): cross-entropy that down-weights easy examples",
                         (FOCAL_GAMMA, FOCAL_ALPHA), build=_focal))


def build_loss(task: Task, config: Mapping[str, Any]) -> nn.Module:
    """The loss ``config`` names (``config["loss"]``) for ``task``, with its own parameters from ``config``."""
    spec = LOSSES.get(config["loss"])
    return spec.build(task, **spec.own_values(config))


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Per-label sigmoid for multi-label tasks, softmax over classes otherwise."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)
