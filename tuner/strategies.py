"""Fine-tuning strategies: which trunk layer groups train at each epoch, and what else changes.

A strategy only consumes the backbone's declared layer groups; the head always trains. The optimizer is
built over every parameter once: a frozen parameter has ``requires_grad=False``, gets no gradient, and
PyTorch's optimizers skip parameters without a gradient (no update, no momentum, no weight decay), so
the optimizer follows whatever is trainable at the moment.

The eight strategies of the fine-tuning-strategies paper, plus ``topk`` (the ConvSkip paper's depth):

- ``ft``: everything trains.  ``lp``: only the head.
- ``g_lf`` / ``g_fl``: gradual unfreezing. Epochs 1..``unfreeze_every`` train the head alone; every
  ``unfreeze_every`` epochs one more group joins, from the last group towards the first (``g_lf``) or
  from the first towards the last (``g_fl``); unfrozen groups stay unfrozen.
- ``lp_ft``: the head alone for ``lp_epochs`` epochs, then everything.
- ``l1_sp`` / ``l2_sp``: everything trains, and the loss gains
  ``sp_alpha * ||w - w0||`` over the trunk (w0: its starting weights) ``+ sp_beta * ||w||`` over the head,
  with the L1 norm or the squared L2 norm. They replace plain weight decay, which must be 0.
- ``auto_rgn``: everything trains; each parameter tensor's learning rate is the schedule's rate times
  its relative gradient norm ||g|| / ||w||, divided by the largest one, recomputed at the start of every
  epoch on the epoch's first batch. A tensor of norm 0 (a zero-initialised bias) has no relative
  gradient and keeps the full rate.
- ``topk``: the top ``unfreeze`` groups and the head.
"""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

import torch
from torch import nn

from tuner.errors import ConfigError

# Defaults filled into a config when its strategy uses the parameter and it was not given.
STRATEGY_DEFAULTS: dict[str, Any] = {"unfreeze_every": 1, "sp_alpha": 0.1, "sp_beta": 0.01}


class Strategy:
    name: str = ""
    description: str = ""
    params: tuple[str, ...] = ()  # config keys this strategy reads; no other strategy may be given them
    per_tensor_learning_rates = False

    def trainable_groups(self, config: Mapping[str, Any], num_groups: int, epoch: int) -> range:
        """Indices of the trunk groups (0 = stem) that train during ``epoch`` (1-based)."""
        return range(num_groups)

    def check(self, config: Mapping[str, Any], num_groups: int, backbone: str) -> None:
        """Refuse values this strategy cannot use."""

    def penalty(self, config: Mapping[str, Any], model: nn.Module,
                start: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the training loss, or None."""
        return None


class FullFineTuning(Strategy):
    name, description = "ft", "full fine-tuning: every layer trains"


class LinearProbing(Strategy):
    name, description = "lp", "linear probing: only the head trains"

    def trainable_groups(self, config, num_groups, epoch):
        return range(0)


class TopK(Strategy):
    name, description, params = "topk", "the top `unfreeze` layer groups and the head train", ("unfreeze",)

    def trainable_groups(self, config, num_groups, epoch):
        return range(num_groups - config["unfreeze"], num_groups)

    def check(self, config, num_groups, backbone):
        unfreeze = config.get("unfreeze")
        if not isinstance(unfreeze, int) or isinstance(unfreeze, bool) or not 0 <= unfreeze <= num_groups:
            raise ConfigError(f"unfreeze={unfreeze!r} is out of range: {backbone} has {num_groups} layer "
                              f"groups, so unfreeze must be an integer from 0 to {num_groups}.")


class GradualUnfreezing(Strategy):
    params = ("unfreeze_every",)

    def __init__(self, name: str, from_last: bool) -> None:
        self.name, self.from_last = name, from_last
        direction = "last to first" if from_last else "first to last"
        self.description = f"gradual unfreezing, {direction}: one more group every `unfreeze_every` epochs"

    def trainable_groups(self, config, num_groups, epoch):
        unfrozen = min(num_groups, (epoch - 1) // config["unfreeze_every"])
        return range(num_groups - unfrozen, num_groups) if self.from_last else range(0, unfrozen)

    def check(self, config, num_groups, backbone):
        every = config.get("unfreeze_every")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"unfreeze_every={every!r} must be an integer >= 1 (epochs between unfreezing "
                              "one more layer group).")


class LinearProbingThenFineTuning(Strategy):
    name, params = "lp_ft", ("lp_epochs",)
    description = "linear probing for `lp_epochs` epochs, then full fine-tuning"

    def trainable_groups(self, config, num_groups, epoch):
        return range(0) if epoch <= config["lp_epochs"] else range(num_groups)

    def check(self, config, num_groups, backbone):
        lp_epochs, epochs = config.get("lp_epochs"), config["epochs"]
        if not isinstance(lp_epochs, int) or isinstance(lp_epochs, bool) or not 1 <= lp_epochs < epochs:
            raise ConfigError(f"lp_epochs={lp_epochs!r} must be an integer from 1 to epochs - 1 ({epochs - 1}): "
                              "lp_ft probes for lp_epochs epochs and then fine-tunes everything.")


class StartingPointRegularization(Strategy):
    params = ("sp_alpha", "sp_beta")

    def __init__(self, name: str, norm: str) -> None:
        self.name, self.norm = name, norm
        self.description = f"full fine-tuning with the {norm.upper()}-SP penalty towards the starting weights"

    def check(self, config, num_groups, backbone):
        for key in self.params:
            if not isinstance(config.get(key), int | float) or config[key] < 0:
                raise ConfigError(f"{key}={config.get(key)!r} must be a number >= 0.")
        if config["weight_decay"]:
            raise ConfigError(f"weight_decay={config['weight_decay']} with strategy {self.name}: {self.name} "
                              "replaces weight decay (sp_beta penalises the head, sp_alpha pulls the trunk to "
                              "its starting weights); set weight_decay=0.")

    def penalty(self, config, model, start):
        return sp_penalty(model, start, config["sp_alpha"], config["sp_beta"], self.norm)


class AutoRGN(Strategy):
    name, per_tensor_learning_rates = "auto_rgn", True
    description = "full fine-tuning, each tensor's learning rate scaled by its normalised relative gradient norm"


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    FullFineTuning(), LinearProbing(), GradualUnfreezing("g_lf", from_last=True),
    GradualUnfreezing("g_fl", from_last=False), LinearProbingThenFineTuning(),
    StartingPointRegularization("l1_sp", "l1"), StartingPointRegularization("l2_sp", "l2"), AutoRGN(), TopK(),
)}
STRATEGY_PARAMS = tuple(dict.fromkeys(p for s in STRATEGIES.values() for p in s.params))


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        close = get_close_matches(str(name), STRATEGIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown strategy {name!r}. Known strategies: "
                          f"{', '.join(sorted(STRATEGIES))}.{hint}") from None


def check_strategy_config(config: Mapping[str, Any], num_groups: int, backbone: str) -> None:
    """Refuse a strategy without its parameters, with out-of-range values, or with another
    strategy's parameters (a value that would be logged but never used)."""
    strategy = get_strategy(config["strategy"])
    for key in set(STRATEGY_PARAMS) - set(strategy.params):
        if config.get(key) is not None:
            users = " and ".join(s.name for s in STRATEGIES.values() if key in s.params)
            raise ConfigError(f"{key}={config[key]!r} is a parameter of strategy {users}, but the strategy is "
                              f"{strategy.name!r}, which ignores it. Remove {key} or change the strategy.")
    strategy.check(config, num_groups, backbone)


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
