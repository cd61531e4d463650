"""Training losses: cross-entropy (softmax; per-label sigmoid + BCE for multi-label) or focal loss.

Focal loss (Lin et al. 2017) down-weights easy examples: FL = -alpha_t (1 - p_t)^gamma log p_t, where
p_t is the probability given to the true class. With gamma = 0 and no alpha it is cross-entropy. alpha
weighs the positive class by alpha and the negative by 1 - alpha, so it is defined for binary and
multi-label tasks; a multi-label focal loss is torchvision's ``sigmoid_focal_loss``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from tuner._torchvision import torchvision
from tuner.data.splits import Task


class FocalLoss(nn.Module):
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


def build_loss(task: Task, loss: str, focal_gamma: float | None, focal_alpha: float | None) -> nn.Module:
    if loss == "focal":
        return FocalLoss(task, 2.0 if focal_gamma is None else focal_gamma, focal_alpha)
    return nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Per-label sigmoid for multi-label tasks, softmax over classes otherwise."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)
