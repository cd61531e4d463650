"""The strategies where every layer trains but the update itself changes.

- ``l2_sp`` (Li et al. 2018, "Explicit inductive bias for transfer learning with convolutional
  networks"): the loss gains ``sp_alpha/2 * ||w - w0||²`` over the trunk (w0: its starting weights)
  ``+ sp_beta/2 * ||w||²`` over the head. The ½ is Li et al.'s own convention, so ``sp_alpha`` and
  ``sp_beta`` are their α and β (their recommended α = 0.1, β = 0.01 are the defaults); the gradient of
  the trunk term is ``sp_alpha * (w - w0)``.
- ``l1_sp`` (Li et al.'s L1 variant): ``l1_sp_alpha * ||w - w0||₁`` over the trunk ``+ sp_beta/2 *
  ||w||²`` over the head (the same head term as L2-SP: weight decay on the new layer; the strategies
  paper's eq. 1 writes an L1 head term, but cites Li et al., whose L1-SP keeps this one). An L1 norm
  has no ½ convention. Its α gets its own key because it means something else: the L1 term's gradient
  is ``l1_sp_alpha * sign(w - w0)`` on every trunk weight, whatever its distance, so ``l1_sp_alpha`` is
  a threshold that a weight's data gradient must exceed for it to leave w0 at all (the lasso's
  optimality condition). Mean-reduced losses give per-weight gradients of about ||g|| / sqrt(N): on
  ResNets (N = 11M to 24M weights) the median is ~1e-4 (measured on BreastMNIST, 64 px, resnet18 from
  scratch; 1e-5 already lets ~70% of the weights move, 0.1 lets none). The default 1e-5 is therefore a
  pull that the informative weights overcome and the rest do not; searched on a log scale around it
  (1e-7..1e-3). At L2-SP's α = 0.1 L1-SP would hold every weight at w0 and behave as a linear probe.
  Both replace plain weight decay, which must be 0. The trial reports the trunk's distance from w0
  each epoch (``train_sp_distance_l2`` = ||w - w0||₂ and ``train_sp_distance_l1`` = ||w - w0||₁).
- ``auto_rgn`` (Lee et al. 2023, "Surgical fine-tuning"): each parameter tensor's learning rate is the
  schedule's rate times its relative gradient norm ||g|| / ||w||, divided by the largest one,
  re-measured at the start of every epoch (``tuner.training.rgn``) on ``rgn_batches`` shuffled
  batches. A tensor of norm 0 (a zero-initialised bias) has no relative gradient and keeps the full rate.
"""

from __future__ import annotations

import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.spec import Param
from tuner.strategies.base import STRATEGIES, Strategy, StrategyContext, StrategySpec

SP_ALPHA = Param("sp_alpha", (int, float), 0.1, "L2-SP's α: the pull α/2·‖w − w₀‖² towards the starting trunk "
                 "(Li et al.'s ½ convention)", low=0.0)
SP_BETA = Param("sp_beta", (int, float), 0.01, "SP's β: the penalty β/2·‖w‖² on the head's weights", low=0.0)
L1_SP_ALPHA = Param("l1_sp_alpha", (int, float), 1e-5, "L1-SP's α: the pull α·‖w − w₀‖₁ towards the starting "
                    "trunk, a per-weight gradient threshold (see tuner/strategies/regularization.py)", low=0.0)
RGN_BATCHES = Param("rgn_batches", int, 4, "shuffled training batches Auto-RGN's scales are measured on, each "
                    "epoch", low=1)


class StartingPointRegularization(Strategy):
    """Full fine-tuning with the SP penalty towards the starting trunk; the subclass gives the norm."""

    norm: str  # "l1" or "l2" (squared, halved)
    pulls_to_start = True

    def __init__(self, context: StrategyContext, *, alpha: float, sp_beta: float) -> None:
        if context.weight_decay:
            raise ConfigError(f"weight_decay={context.weight_decay} with strategy {self.norm}_sp: {self.norm}_sp "
                              "replaces weight decay (sp_beta penalises the head, its alpha pulls the trunk to its "
                              "starting weights); set weight_decay=0.")
        self.alpha, self.sp_beta = alpha, sp_beta

    def penalty(self, model: nn.Module, start_weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return sp_penalty(model, start_weights, self.alpha, self.sp_beta, self.norm)


class L1StartingPoint(StartingPointRegularization):
    """L1-SP: absolute distances of the trunk, weighted by ``l1_sp_alpha``."""

    norm = "l1"

    def __init__(self, context: StrategyContext, *, l1_sp_alpha: float, sp_beta: float) -> None:
        super().__init__(context, alpha=l1_sp_alpha, sp_beta=sp_beta)


class L2StartingPoint(StartingPointRegularization):
    """L2-SP: halved squared distances of the trunk, weighted by ``sp_alpha``."""

    norm = "l2"

    def __init__(self, context: StrategyContext, *, sp_alpha: float, sp_beta: float) -> None:
        super().__init__(context, alpha=sp_alpha, sp_beta=sp_beta)


class AutoRGN(Strategy):
    """Full fine-tuning, each tensor's learning rate scaled by its normalised relative gradient norm
    (``relative_gradient_norms``), which the trial measures each epoch on ``rgn_batches`` batches."""

    per_tensor_learning_rates = True

    def __init__(self, context: StrategyContext, *, rgn_batches: int) -> None:
        self.rgn_batches = rgn_batches


def sp_penalty(model: nn.Module, start: dict[str, torch.Tensor], alpha: float, beta: float,
               norm: str) -> torch.Tensor:
    """The SP penalty: ``alpha * ||w - w0||₁`` (L1) or ``alpha/2 * ||w - w0||²`` (L2) over the trunk,
    plus ``beta/2 * ||w||²`` over the head in both (Li et al.)."""
    if norm == "l1":
        trunk = alpha * sum((p - start[name]).abs().sum() for name, p in model.trunk.named_parameters())
    else:
        trunk = alpha / 2 * sum((p - start[name]).pow(2).sum() for name, p in model.trunk.named_parameters())
    return trunk + beta / 2 * sum(p.pow(2).sum() for p in model.head.parameters())


@torch.no_grad()
def trunk_distances(model: nn.Module, start: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far the trunk's weights moved from their start: ``sp_distance_l2`` = ||w - w0||₂ and
    ``sp_distance_l1`` = ||w - w0||₁ over every trunk parameter (buffers excluded)."""
    squared = absolute = 0.0
    for name, parameter in model.trunk.named_parameters():
        difference = (parameter - start[name]).double()
        squared += difference.pow(2).sum().item()
        absolute += difference.abs().sum().item()
    return {"sp_distance_l2": squared ** 0.5, "sp_distance_l1": absolute}


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
    "l1_sp", "full fine-tuning with Li et al.'s L1-SP penalty towards the starting weights (instead of weight decay)",
    (L1_SP_ALPHA, SP_BETA), strategy=L1StartingPoint))
STRATEGIES.register(StrategySpec(
    "l2_sp", "full fine-tuning with Li et al.'s L2-SP penalty towards the starting weights (instead of weight decay)",
    (SP_ALPHA, SP_BETA), strategy=L2StartingPoint))
STRATEGIES.register(StrategySpec(
    "auto_rgn", "full fine-tuning, each tensor's learning rate scaled by its normalised relative gradient norm, "
    "measured on `rgn_batches` shuffled batches each epoch", (RGN_BATCHES,), strategy=AutoRGN))
