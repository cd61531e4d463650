"""Fine-tuning strategies: which trunk layer groups train at each epoch, and what else changes.

A strategy only consumes the backbone's declared layer groups; the head always trains. The optimizer is
built over every parameter: a frozen parameter has ``requires_grad=False``, gets no gradient, and
PyTorch's optimizers skip parameters without a gradient (no update, no momentum, no weight decay), so
the optimizer follows whatever is trainable at the moment. A strategy whose phases are separate
trainings (``lp_ft``) declares them as ``OptimizerPhase``s: each starts with a fresh optimizer and its
own cosine schedule.

The eight strategies of the fine-tuning-strategies paper (``ft``, ``lp``, ``g_lf``, ``g_fl``, ``lp_ft``,
``l1_sp``, ``l2_sp``, ``auto_rgn``) plus ``topk`` (the ConvSkip paper's depth). Each is declared once in
``STRATEGIES`` (``tuner.strategies.base``): the ones that choose which groups train in ``freezing``,
the ones that change the update in ``regularization``. A new strategy is one ``STRATEGIES.register``
call next to its ``Strategy`` subclass.
"""

from tuner.strategies import freezing as _freezing  # noqa: F401  (registers ft, lp, g_lf, g_fl, lp_ft, topk)
from tuner.strategies.base import (
    STRATEGIES,
    OptimizerPhase,
    Strategy,
    StrategyContext,
    StrategySpec,
    build_strategy,
    cosine_learning_rate,
)
from tuner.strategies.regularization import (  # and registers l1_sp, l2_sp, auto_rgn
    relative_gradient_norms,
    sp_penalty,
    trunk_distances,
)

__all__ = ["STRATEGIES", "OptimizerPhase", "Strategy", "StrategyContext", "StrategySpec", "build_strategy",
           "cosine_learning_rate", "relative_gradient_norms", "sp_penalty", "trunk_distances"]
