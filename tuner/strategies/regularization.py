"""The strategies where every layer trains but the update itself changes.

- ``l1_sp`` / ``l2_sp``: the loss gains ``sp_alpha * ||w - w0||`` over the trunk (w0: its starting
  weights) ``+ sp_beta * ||w||`` over the head, with the L1 norm or the squared L2 norm. They replace
  plain weight decay, which must be 0.
- ``auto_rgn``: each parameter tensor's learning rate is the schedule's rate times its relative
  gradient norm ||g|| / ||w||, divided by the largest one, recomputed at the start of every epoch on the
  epoch's first batch. A tensor of norm 0 (a zero-initialised bias) has no relative gradient and keeps
  the full rate.
"""

from __future__ import annotations

import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.spec import Param
from tuner.strategies.base import STRATEGIES, Strategy, StrategyContext, StrategySpec

SP_ALPHA = Param("sp_alpha", (int, float), 0.1, "weight of the pull towards the starting trunk", low=0.0)
SP_BETA = Param("sp_beta", (int, float), 0.01, "weight of the penalty on the head's weights", low=0.0)


class StartingPointRegularization(Strategy):
    """Full fine-tuning with the SP penalty towards the starting trunk; the subclass gives the norm."""

    norm: str  # "l1" or "l2" (squared)

    def __init__(self, context: StrategyContext, *, sp_alpha: float, sp_beta: float) -> None:
        if context.weight_decay:
            raise ConfigError(f"weight_decay={context.weight_decay} with strategy {self.norm}_sp: {self.norm}_sp "
                              "replaces weight decay (sp_beta penalises the head, sp_alpha pulls the trunk to its "
                              "starting weights); set weight_decay=0.")
        self.sp_alpha, self.sp_beta = sp_alpha, sp_beta

    def penalty(self, model: nn.Module, start_weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return sp_penalty(model, start_weights, self.sp_alpha, self.sp_beta, self.norm)


class L1StartingPoint(StartingPointRegularization):
    """L1-SP: absolute distances."""

    norm = "l1"


class L2StartingPoint(StartingPointRegularization):
    """L2-SP: squared distances."""

    norm = "l2"


class AutoRGN(Strategy):
    """Full fine-tuning, each tensor's learning rate scaled by its normalised relative gradient norm
    (``relative_gradient_norms``; the trial measures them each epoch)."""

    per_tensor_learning_rates = True


def sp_penalty(model: nn.Module, start: dict[str, torch.Tensor], alpha: float, beta: float,
               norm: str) -> torch.Tensor:
    """alpha * ||w - w0|| over the trunk + beta * ||w|| over the head; L1, or squared L2."""
    def size(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.abs().sum() if norm == "l1" else tensor.pow(2).sum()

    trunk = sum(size(p - start[name]) for name, p in model.trunk.named_parameters())
    head = sum(size(p) for p in model.head.parameters())
    return alpha * trunk + beta * head


def relative_gradient_norms(parameters: list[nn.Parameter]) -> list[float]:
    """Auto-RGN's scales: ||g|| / ||w|| per tensor, divided by the largest; 1 where ||w|| = 0."""
    ratios = []
    for parameter in parameters:
        weight_norm = parameter.detach().norm().item()
        grad_norm = 0.0 if parameter.grad is None else parameter.grad.detach().norm().item()
        ratios.append(grad_norm / weight_norm if weight_norm > 0 else None)
    largest = max((r for r in ratios if r is not None), default=0.0)
    return [1.0 if r is None or largest == 0 else r / largest for r in ratios]


STRATEGIES.register(StrategySpec(
    "l1_sp", "full fine-tuning with the L1-SP penalty towards the starting weights (instead of weight decay)",
    (SP_ALPHA, SP_BETA), strategy=L1StartingPoint))
STRATEGIES.register(StrategySpec(
    "l2_sp", "full fine-tuning with the L2-SP penalty towards the starting weights (instead of weight decay)",
    (SP_ALPHA, SP_BETA), strategy=L2StartingPoint))
STRATEGIES.register(StrategySpec(
    "auto_rgn", "full fine-tuning, each tensor's learning rate scaled by its normalised relative gradient norm",
    strategy=AutoRGN))
