"""Optimizers, each declared once in ``OPTIMIZERS`` with its own parameters: ``sgd`` (Nesterov, with
``momentum``) and ``adam``. ``lr`` and ``weight_decay`` are trial-level parameters every optimizer takes.

The optimizer is built over every parameter once: frozen parameters get no gradient and PyTorch's
optimizers skip them, so it follows whatever the strategy makes trainable. Where each tensor gets its
own learning rate (Auto-RGN), every tensor is its own parameter group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tuner.spec import Component, Param, Registry

MOMENTUM = Param("momentum", (int, float), 0.9, "SGD's Nesterov momentum", low=0.0, high=1.0, low_open=True,
                 high_open=True)


@dataclass(frozen=True)
class OptimizerSpec(Component):
    """An optimizer's one declaration: name, doc, parameters, and ``build(parameters, lr=, weight_decay=,
    **own_values)`` returning the torch optimizer."""

    build: Callable[..., torch.optim.Optimizer] = field(kw_only=True)


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")


def _sgd(parameters: Iterable[Any], *, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


def _adam(parameters: Iterable[Any], *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


OPTIMIZERS.register(OptimizerSpec("sgd", "SGD with Nesterov momentum", (MOMENTUM,), build=_sgd))
OPTIMIZERS.register(OptimizerSpec("adam", "Adam with PyTorch's default betas and eps", build=_adam))


def build_optimizer(model: nn.Module, config: Mapping[str, Any], *, per_tensor: bool) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over every parameter of ``model``, with the trial's ``lr`` and
    ``weight_decay`` and its own parameters; one parameter group per tensor when ``per_tensor``."""
    spec = OPTIMIZERS.get(config["optimizer"])
    params = [{"params": [p]} for p in model.parameters()] if per_tensor else model.parameters()
    return spec.build(params, lr=config["lr"], weight_decay=config["weight_decay"], **spec.own_values(config))
