"""The strategy interface, its declaration, and the registry every strategy is declared in.

A strategy is declared once, as a ``StrategySpec`` in ``STRATEGIES``: its name, what it does, its
parameters (``tuner.spec.Param``: type, range, default) and the ``Strategy`` class that runs it. Config
checking, default filling, the refusal of another strategy's parameter and the README's table all read
that declaration. A trial builds its strategy with ``build_strategy``: the instance holds its own
validated values and never reads the config again.
"""

from __future__ import annotations

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


class Strategy:
    """One trial's strategy, holding its own validated parameter values.

    The base trains every group, adds no penalty and gives every tensor the same learning rate; a
    subclass overrides what differs, and refuses in ``__init__`` the values it cannot use (as Optuna's
    pruners check their own parameters), so a strategy that exists is one that can run.
    """

    per_tensor_learning_rates = False  # whether each parameter tensor gets its own learning rate (Auto-RGN)

    def __init__(self, context: StrategyContext) -> None:
        """A strategy without parameters has nothing to check against ``context``."""

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        """Indices of the trunk groups (0 = stem) that train during ``epoch`` (1-based); the head always trains."""
        return range(num_groups)

    def penalty(self, model: nn.Module, start_weights: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the training loss (``start_weights``: the trunk before training), or None."""
        return None


@dataclass(frozen=True)
class StrategySpec(Component):
    """A strategy's one declaration: name, doc, parameters, and the class that runs it, constructed as
    ``strategy(context, **own_values)``."""

    strategy: type[Strategy] = field(kw_only=True)


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
