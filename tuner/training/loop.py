"""One epoch of training and one pass of evaluation; nothing else."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner.data.splits import Task
from tuner.training.losses import probabilities


@dataclass
class Evaluation:
    """One pass over a split: its mean loss and the per-sample outputs every metric (and DeLong) is computed from."""

    loss: float
    probs: np.ndarray  # (N, C) class probabilities (softmax; per-label sigmoid for multi-label)
    labels: np.ndarray  # (N,) class indices, or (N, C) 0/1 for multi-label


class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); full fp32 on CPU,
    where autocast brings no speed."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.enabled = enabled and device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)
        self.device_type = device.type

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context forward passes run in: autocast where mixed precision is on, else nothing."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> int:
    """Right answers in a batch: the argmax class, or every label right (exact match) for multi-label."""
    if task == "multilabel":
        return int(((logits >= 0).float() == labels).all(dim=1).sum().item())
    return int((logits.argmax(dim=1) == labels).sum().item())


def train_one_epoch(model: nn.Module, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, precision: Precision, task: Task,
                    penalty: Callable[[], torch.Tensor | None] = lambda: None) -> tuple[float, float]:
    """Returns the epoch's mean training loss (the data term, without any strategy penalty, so that it
    compares with the validation loss) and accuracy. A non-finite loss stops the trial: its weights are
    already ruined, and going on would only spend compute."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images)
            loss = loss_fn(logits.float(), labels)
        extra = penalty()
        objective = loss if extra is None else loss + extra
        if not math.isfinite(objective.item()):
            raise FloatingPointError(f"training loss became {objective.item()} (lr too high?)")
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(objective).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        total_loss += loss.item() * len(labels)
        correct += correct_predictions(logits, labels, task)
        seen += len(labels)
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, loss_fn: nn.Module,
             device: torch.device, precision: Precision, task: Task) -> Evaluation:
    """Score ``model`` on ``loader`` in eval mode without gradients; non-finite outputs mean the weights
    diverged, which ends the trial as diverged rather than scoring garbage."""
    model.eval()
    total_loss, probs, labels = 0.0, [], []
    for images, batch_labels in loader:
        images, batch_labels = images.to(device, non_blocking=True), batch_labels.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images).float()
        total_loss += loss_fn(logits, batch_labels).item() * len(batch_labels)
        probs.append(probabilities(logits, task).cpu())
        labels.append(batch_labels.cpu())
    all_labels, all_probs = torch.cat(labels).numpy(), torch.cat(probs).numpy()
    if not np.isfinite(all_probs).all():
        raise FloatingPointError("the model's outputs became non-finite (its weights diverged; lr too high?)")
    return Evaluation(total_loss / len(all_labels), all_probs, all_labels)
