"""Classifier heads on the pooled feature vector (B, F).

``conv`` follows the ConvSkip paper: a 1-D convolution slides along the feature vector, treating it
as a 1-channel sequence, so neighbouring features are combined before the final linear layer.
``convskip`` adds a linear branch straight from the features to the logits, summed with the conv
path. ``kernel_size`` and ``filters`` shape the convolution itself (weight (filters, 1, kernel_size),
"same" padding), so a searched kernel size always changes the model.
"""

from __future__ import annotations

from difflib import get_close_matches

import torch
from torch import nn

from tuner.errors import ConfigError

DEFAULT_KERNEL_SIZE = 3
DEFAULT_FILTERS = 8
DEFAULT_HIDDEN_RATIO = 0.5

# Which optional knobs each head reads; a knob given to a head that ignores it is an error.
HEAD_KNOBS: dict[str, tuple[str, ...]] = {
    "linear": (),
    "conv": ("kernel_size", "filters"),
    "convskip": ("kernel_size", "filters"),
    "mlp": ("hidden_ratio",),
}


class LinearHead(nn.Sequential):
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
    def __init__(self, in_features: int, num_outputs: int, dropout: float, hidden_ratio: float) -> None:
        hidden = max(1, round(in_features * hidden_ratio))
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_outputs))


def head_names() -> list[str]:
    return sorted(HEAD_KNOBS)


def check_head(name: str) -> None:
    if name not in HEAD_KNOBS:
        close = get_close_matches(str(name), HEAD_KNOBS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown head {name!r}. Known heads: {', '.join(head_names())}.{hint}")


def build_head(name: str, in_features: int, num_outputs: int, *, dropout: float = 0.0,
               kernel_size: int | None = None, filters: int | None = None,
               hidden_ratio: float | None = None) -> nn.Module:
    check_head(name)
    if name == "linear":
        return LinearHead(in_features, num_outputs, dropout)
    if name == "mlp":
        return MLPHead(in_features, num_outputs, dropout,
                       DEFAULT_HIDDEN_RATIO if hidden_ratio is None else hidden_ratio)
    head_class = ConvHead if name == "conv" else ConvSkipHead
    return head_class(in_features, num_outputs, dropout,
                      DEFAULT_KERNEL_SIZE if kernel_size is None else kernel_size,
                      DEFAULT_FILTERS if filters is None else filters)
