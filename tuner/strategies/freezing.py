"""The strategies that differ in which trunk layer groups train, epoch by epoch.

- ``ft``: everything trains.  ``lp``: only the head.  ``topk``: the top ``unfreeze`` groups and the head.
- ``g_lf`` / ``g_fl``: gradual unfreezing. Epochs 1..``unfreeze_every`` train the head alone; every
  ``unfreeze_every`` epochs one more group joins, from the last group towards the first (``g_lf``) or
  from the first towards the last (``g_fl``); unfrozen groups stay unfrozen.
- ``lp_ft``: the head alone for ``lp_epochs`` epochs, then everything, as two trainings (Kumar et al.
  2022, "Fine-tuning can distort pretrained features"): the fine-tuning phase starts with a fresh
  optimizer (no momentum or Adam moments left from probing) at its own learning rate ``lp_ft_lr``, and
  each phase has its own cosine schedule (probing anneals ``lr`` over ``lp_epochs``, fine-tuning anneals
  ``lp_ft_lr`` over the remaining epochs), as a probe trained to its end followed by a fine-tuning run.
  ``lp_ft_lr`` defaults to ``lr / 10``: Kumar et al. choose the fine-tuning phase's rate separately and
  the head it starts from is already fitted, so large first steps would only distort the pretrained
  features that LP-FT exists to keep; the search may still choose it.

Each strategy declares its ``last_phase_change``: 1 where the trainable set never changes; for
``lp_ft`` the first fine-tuning epoch; for ``g_lf`` / ``g_fl`` the epoch the last group joins
(``num_groups * unfreeze_every + 1``, which may lie beyond ``epochs``: such a trial never settles and
patience never stops it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.errors import ConfigError
from tuner.spec import Param
from tuner.strategies.base import STRATEGIES, OptimizerPhase, Strategy, StrategyContext, StrategySpec

UNFREEZE = Param("unfreeze", int, None, "how many layer groups, counted from the top, train", low=0)
UNFREEZE_EVERY = Param("unfreeze_every", int, 1, "epochs between unfreezing one more layer group", low=1)
LP_EPOCHS = Param("lp_epochs", int, None, "epochs of linear probing before everything trains", low=1)
LP_FT_LR_DIVISOR = 10  # lp_ft_lr's default is lr / LP_FT_LR_DIVISOR (see the module docstring)
LP_FT_LR = Param("lp_ft_lr", (int, float), None, "learning rate of lp_ft's fine-tuning phase, which starts with "
                 f"a fresh optimizer (unset: lr / {LP_FT_LR_DIVISOR})", low=0.0, low_open=True, nullable=True)


class LinearProbing(Strategy):
    """Only the head trains: the trunk is a fixed feature extractor."""

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        return range(0)


class TopK(Strategy):
    """The top ``unfreeze`` groups and the head train (the ConvSkip paper's depth)."""

    def __init__(self, context: StrategyContext, *, unfreeze: int | None) -> None:
        if unfreeze is None or not 0 <= unfreeze <= context.num_groups:
            raise ConfigError(f"unfreeze={unfreeze!r} is out of range: {context.backbone} has {context.num_groups} "
                              f"layer groups, so unfreeze must be an integer from 0 to {context.num_groups}.")
        self.unfreeze = unfreeze

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        return range(num_groups - self.unfreeze, num_groups)


class GradualUnfreezing(Strategy):
    """One more group every ``unfreeze_every`` epochs, after ``unfreeze_every`` epochs of the head alone;
    the subclass says from which end."""

    from_last: bool

    def __init__(self, context: StrategyContext, *, unfreeze_every: int) -> None:
        self.unfreeze_every = unfreeze_every

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        unfrozen = min(num_groups, (epoch - 1) // self.unfreeze_every)
        return range(num_groups - unfrozen, num_groups) if self.from_last else range(0, unfrozen)

    def last_phase_change(self, num_groups: int) -> int:
        return num_groups * self.unfreeze_every + 1


class LastToFirst(GradualUnfreezing):
    """Gradual unfreezing from the last group towards the stem (``g_lf``)."""

    from_last = True


class FirstToLast(GradualUnfreezing):
    """Gradual unfreezing from the stem towards the last group (``g_fl``)."""

    from_last = False


class LinearProbingThenFineTuning(Strategy):
    """The head alone for ``lp_epochs`` epochs, then everything, from a fresh optimizer at ``lp_ft_lr``."""

    def __init__(self, context: StrategyContext, *, lp_epochs: int | None, lp_ft_lr: float) -> None:
        if lp_epochs is None or not 1 <= lp_epochs < context.epochs:
            raise ConfigError(f"lp_epochs={lp_epochs!r} must be an integer from 1 to epochs - 1 ({context.epochs - 1}):"
                              " lp_ft probes for lp_epochs epochs and then fine-tunes everything.")
        self.lp_epochs = lp_epochs
        self.lp_ft_lr = lp_ft_lr

    @classmethod
    def derived_defaults(cls, values: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return {"lp_ft_lr": config["lr"] / LP_FT_LR_DIVISOR} if values["lp_ft_lr"] is None else {}

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        return range(0) if epoch <= self.lp_epochs else range(num_groups)

    def last_phase_change(self, num_groups: int) -> int:
        return self.lp_epochs + 1

    def optimizer_phase(self, epoch: int, lr: float, epochs: int) -> OptimizerPhase:
        if epoch <= self.lp_epochs:
            return OptimizerPhase(1, self.lp_epochs, lr)
        return OptimizerPhase(self.lp_epochs + 1, epochs, self.lp_ft_lr)


STRATEGIES.register(StrategySpec("ft", "full fine-tuning: every layer trains", strategy=Strategy))
STRATEGIES.register(StrategySpec("lp", "linear probing: only the head trains", strategy=LinearProbing))
STRATEGIES.register(StrategySpec(
    "g_lf", "gradual unfreezing, last group to first: one more group every `unfreeze_every` epochs",
    (UNFREEZE_EVERY,), strategy=LastToFirst))
STRATEGIES.register(StrategySpec(
    "g_fl", "gradual unfreezing, first group to last: one more group every `unfreeze_every` epochs",
    (UNFREEZE_EVERY,), strategy=FirstToLast))
STRATEGIES.register(StrategySpec(
    "lp_ft", "linear probing for `lp_epochs` epochs, then full fine-tuning from a fresh optimizer at `lp_ft_lr`",
    (LP_EPOCHS, LP_FT_LR), strategy=LinearProbingThenFineTuning))
STRATEGIES.register(StrategySpec("topk", "the top `unfreeze` layer groups and the head train", (UNFREEZE,),
                                 strategy=TopK))
