"""Classifier heads on the pooled feature vector (B, F).

``conv`` follows the ConvSkip paper: a 1-D convolution slides along the feature vector, treating it
as a 1-channel sequence, so neighbouring features are combined before the final linear layer.
``convskip`` adds a linear branch straight from the features to the logits, summed with the conv
path. ``kernel_size`` and ``filters`` shape the convolution itself (weight (filters, 1, kernel_size),
"same" padding), so a searched kernel size always changes the model.

Each head is declared once, as a ``HeadSpec`` in ``HEADS``, with its parameters; config checking,
defaults, refusals and the README's table read that declaration. A new head is a module class plus one
``HEADS.register`` call (a parameter two heads share is one ``Param`` both list).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tuner.spec import Component, Param, Registry, refuse_foreign_params, unknown_name

KERNEL_SIZE = Param("kernel_size", int, 3, "length of the 1-D convolution over the feature vector", low=1)
FILTERS = Param("filters", int, 8, "output channels of the 1-D convolution", low=1)
HIDDEN_RATIO = Param("hidden_ratio", (int, float), 0.5, "hidden width of the MLP over the feature width",
                     low=0.0, low_open=True)


@dataclass(frozen=True)
class HeadSpec(Component):
    """A head's one declaration: name, doc, parameters, and ``build(in_features, num_outputs, dropout,
    **own_values)`` returning the module."""

    build: Callable[..., nn.Module] = field(kw_only=True)


HEADS: Registry[HeadSpec] = Registry("head")


class LinearHead(nn.Sequential):
    """Dropout, then one linear layer: the classic head that fine-tuning replaces the classifier with."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_outputs))


class ConvHead(nn.Module):
    """1-D convolution over the feature vector, ReLU, then a linear layer over all filter maps."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float, kernel_size: int,
                 filters: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, filters, kernel_size, padding="same")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * in_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = torch.relu(self.conv(features.unsqueeze(1)))  # (B, filters, F)
        return self.fc(self.dropout(maps.flatten(1)))


class ConvSkipHead(ConvHead):
    """The conv path plus a linear skip branch from the features, added at the logits."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float, kernel_size: int,
                 filters: int) -> None:
        super().__init__(in_features, num_outputs, dropout, kernel_size, filters)
        self.skip = nn.Linear(in_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) + self.skip(self.dropout(features))


class MLPHead(nn.Sequential):
    """Linear to ``hidden_ratio`` times the feature width (at least 1), ReLU, dropout, linear."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float, hidden_ratio: float) -> None:
        hidden = max(1, round(in_features * hidden_ratio))
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_outputs))


HEADS.register(HeadSpec("linear", "dropout, then one linear layer", build=LinearHead))
HEADS.register(HeadSpec("conv", "1-D convolution along the feature vector, ReLU, then a linear layer",
                        (KERNEL_SIZE, FILTERS), build=ConvHead))
HEADS.register(HeadSpec("convskip", "the conv head plus a linear skip branch from the features to the logits",
                        (KERNEL_SIZE, FILTERS), build=ConvSkipHead))
HEADS.register(HeadSpec("mlp", "linear, ReLU, dropout, linear", (HIDDEN_RATIO,), build=MLPHead))


def build_head(name: str, in_features: int, num_outputs: int, *, dropout: float = 0.0, **params: Any) -> nn.Module:
    """The head called ``name`` on ``in_features`` features; ``params`` are its own parameters (a missing
    one gets its default, each value is checked, another head's parameter is refused)."""
    spec = HEADS.get(name)
    unknown = sorted(set(params) - set(HEADS.params()))
    if unknown:
        raise unknown_name("head parameter", unknown[0], HEADS.params())
    refuse_foreign_params(HEADS, spec, params)
    return spec.build(in_features, num_outputs, dropout, **spec.own_values(params))
