"""Fine-tuning strategies: which trunk layer groups train at each epoch.

A strategy only consumes the backbone's declared layer groups; the head always trains. The optimizer
is built over every parameter once: a frozen parameter has ``requires_grad=False``, gets no gradient,
and PyTorch's optimizers skip parameters without a gradient (no update, no weight decay), so the
optimizer follows whatever is trainable at the moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from tuner.errors import ConfigError


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    params: tuple[str, ...]  # config keys this strategy reads; no other strategy may be given them

    def trainable_groups(self, config: Mapping[str, Any], num_groups: int, epoch: int) -> range:
        """Indices of the trunk groups (0 = stem) that train during ``epoch`` (1-based)."""
        if self.name == "ft":
            return range(num_groups)
        if self.name == "lp":
            return range(0)
        if self.name == "topk":
            return range(num_groups - int(config["unfreeze"]), num_groups)
        raise AssertionError(self.name)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("ft", "full fine-tuning: every layer trains", ()),
    Strategy("lp", "linear probing: only the head trains", ()),
    Strategy("topk", "the top `unfreeze` layer groups and the head train", ("unfreeze",)),
)}


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
    for other in STRATEGIES.values():
        for key in set(other.params) - set(strategy.params):
            if config.get(key) is not None:
                raise ConfigError(f"{key}={config[key]!r} is a parameter of strategy {other.name!r}, but "
                                  f"the strategy is {strategy.name!r}, which ignores it. Remove {key} or "
                                  f"use strategy={other.name}.")
    if strategy.name == "topk":
        unfreeze = config.get("unfreeze")
        if not isinstance(unfreeze, int) or isinstance(unfreeze, bool) or not 0 <= unfreeze <= num_groups:
            raise ConfigError(f"unfreeze={unfreeze!r} is out of range: {backbone} has {num_groups} layer "
                              f"groups, so unfreeze must be an integer from 0 to {num_groups}.")
