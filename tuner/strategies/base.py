"""The strategy interface, its declaration, and the registry every strategy is declared in.

A strategy is declared once, as a ``StrategySpec`` in ``STRATEGIES``: its name, what it does, its
parameters (``tuner.spec.Param``: type, range, default) and the ``Strategy`` class that runs it. Config
checking, default filling, the refusal of another strategy's parameter and the README's table all read
that declaration. A trial builds its strategy with ``build_strategy``: the instance holds its own
validated values and never reads the config again.

A strategy also says when it has *become itself*: ``last_phase_change`` is the epoch of its last change
of trainable set or optimizer (``lp_ft``: the first fine-tuning epoch). Before it, a staged strategy is
still an earlier strategy (a linear probe), so neither patience nor ASHA may judge it then: the trial
reports ``settled_epoch`` and ``phase_epoch`` (epochs since it settled) for the search to schedule on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tuner.spec import Component, Registry


@dataclass(frozen=True)
class StrategyContext:
    """The facts of a trial that a strategy may check its values against (``unfreeze`` against the
    trunk's groups, ``lp_epochs`` against ``epochs``), given explicitly so that no strategy reads the
    whole config."""

    backbone: str
    num_groups: int  # layer groups of the chosen backbone and grouping
    epochs: int
    weight_decay: float


@dataclass(frozen=True)
class OptimizerPhase:
    """A stretch of epochs ``first..last`` trained by one optimizer, whose learning rate is
    cosine-annealed from ``lr`` over the stretch. A phase that starts after epoch 1 starts with a
    fresh optimizer (no momentum, no Adam moments): the state of the phase before belongs to another
    trainable set and another learning rate."""

    first: int
    last: int
    lr: float

    def learning_rate(self, epoch: int) -> float:
        """Cosine annealing from ``lr`` at the phase's first epoch towards 0, one step per epoch."""
        return cosine_learning_rate(self.lr, epoch - self.first + 1, self.last - self.first + 1)


def cosine_learning_rate(base: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``base`` at epoch 1 towards 0 over ``epochs`` epochs, one step per epoch."""
    return base * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


class Strategy:
    """One trial's strategy, holding its own validated parameter values.

    The base trains every group, adds no penalty, gives every tensor the same learning rate and keeps
    one optimizer for the whole trial; a subclass overrides what differs, and refuses in ``__init__``
    the values it cannot use (as Optuna's pruners check their own parameters), so a strategy that
    exists is one that can run.
    """

    per_tensor_learning_rates = False  # whether each parameter tensor gets its own learning rate (Auto-RGN)
    pulls_to_start = False  # whether its penalty needs the starting trunk (and the trial reports ||w - w0||)
    rgn_batches = 0  # with per-tensor learning rates: the batches each epoch's scales are measured on

    def __init__(self, context: StrategyContext) -> None:
        """A strategy without parameters has nothing to check against ``context``."""

    @classmethod
    def derived_defaults(cls, values: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """Values of this strategy's own parameters that default to a function of the config (``lp_ft_lr``
        of ``lr``), filled in so that the logged config is what ran; ``values`` are its own values."""
        return {}

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        """Indices of the trunk groups (0 = stem) that train during ``epoch`` (1-based); the head always trains."""
        return range(num_groups)

    def last_phase_change(self, num_groups: int) -> int:
        """The epoch (1-based) of the strategy's last change of trainable set or optimizer: from it on
        the strategy is itself, and only from it on may patience or a scheduler judge it."""
        return 1

    def optimizer_phase(self, epoch: int, lr: float, epochs: int) -> OptimizerPhase:
        """The optimizer phase ``epoch`` belongs to (``lr``, ``epochs``: the trial's)."""
        return OptimizerPhase(1, epochs, lr)

    def penalty(self, model: nn.Module, start_weights: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the training loss (``start_weights``: the trunk before training), or None."""
        return None


@dataclass(frozen=True)
class StrategySpec(Component):
    """A strategy's one declaration: name, doc, parameters, and the class that runs it, constructed as
    ``strategy(context, **own_values)``."""

    strategy: type[Strategy] = field(kw_only=True)

    def own_values(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The declared parameters' values (defaults filled in, each checked), then those whose default
        derives from the config (``Strategy.derived_defaults``)."""
        values = super().own_values(config)
        return {**values, **self.strategy.derived_defaults(values, config)}


STRATEGIES: Registry[StrategySpec] = Registry("strategy")


def build_strategy(config: Mapping[str, Any], num_groups: int) -> Strategy:
    """The strategy ``config`` names, given its own parameters (defaults filled in, each value checked)
    and the trial facts it may check them against; raises ConfigError for a value it cannot use.

    ``num_groups`` is the chosen backbone's number of layer groups under ``config["layer_groups"]``.
    """
    spec = STRATEGIES.get(config["strategy"])
    context = StrategyContext(backbone=config["backbone"], num_groups=num_groups, epochs=config["epochs"],
                              weight_decay=config["weight_decay"])
    return spec.strategy(context, **spec.own_values(config))
