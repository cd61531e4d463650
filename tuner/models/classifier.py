"""A backbone trunk plus a head, with the trunk's layer groups as the unit of freezing.

Frozen groups run in inference mode: their BatchNorm layers use and keep their stored running
statistics instead of re-estimating them from the new domain's batches. Otherwise "frozen" layers
would still change (through their buffers) every step, and a linear probe would not be one. BatchNorm
in trainable groups trains normally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tuner.models.heads import build_head
from tuner.models.registry import DEFAULT_GROUPING, BackboneSpec, LayerGroups, get_backbone
from tuner.models.weights import load_trunk_weights


class Classifier(nn.Module):
    """A trunk and a head, with the trunk divided into its declared layer groups: the unit every
    strategy freezes and unfreezes, so no strategy needs to know an architecture's module names."""

    def __init__(self, spec: BackboneSpec, trunk: nn.Module, head: nn.Module, layer_groups: LayerGroups) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.head = head
        self.layer_groups = layer_groups
        self.groups: list[list[nn.Module]] = [
            [trunk.get_submodule(path) for path in paths] for paths in layer_groups.paths
        ]
        self._trainable_groups: frozenset[int] = frozenset(range(len(self.groups)))

    @property
    def num_groups(self) -> int:
        """How many layer groups the trunk has (stem first)."""
        return len(self.groups)

    @property
    def trainable_groups(self) -> frozenset[int]:
        """The groups that train now; the epoch plan keys its stored frozen outputs by them."""
        return self._trainable_groups

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))

    def group_parameters(self, index: int) -> list[nn.Parameter]:
        """Every parameter of group ``index``: what freezing that group freezes."""
        return [p for module in self.groups[index] for p in module.parameters()]

    def set_trainable_groups(self, indices: frozenset[int] | set[int] | range) -> None:
        """Make exactly these trunk groups (0 = stem) trainable; the head always is."""
        self._trainable_groups = frozenset(indices)
        for index in range(self.num_groups):
            for parameter in self.group_parameters(index):
                parameter.requires_grad_(index in self._trainable_groups)
        for parameter in self.head.parameters():
            parameter.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        """Train or eval mode, except that frozen groups always stay in eval mode, so their BatchNorm
        statistics stay the pretrained ones and a frozen layer is bit-identical after training."""
        super().train(mode)
        if mode:
            for index in set(range(self.num_groups)) - self._trainable_groups:
                for module in self.groups[index]:
                    module.eval()
        return self


def build_classifier(*, backbone: str, weights: str, head: str, num_outputs: int, dropout: float = 0.0,
                     head_params: Mapping[str, Any] | None = None,
                     layer_groups: str = DEFAULT_GROUPING) -> Classifier:
    """Build the trunk, load its starting weights, and put the head in place of its classifier.

    ``head_params`` are the head's own parameters (``{"kernel_size": 5}`` for ``conv``); a missing one
    gets the head's default."""
    spec = get_backbone(backbone)
    groups = spec.layer_groups(layer_groups)
    trunk = spec.build(weights=None)
    trunk.set_submodule(spec.classifier_attr, nn.Identity())
    load_trunk_weights(trunk, spec, weights)
    head_module = build_head(head, spec.feature_dim, num_outputs, dropout=dropout, **(head_params or {}))
    return Classifier(spec, trunk, head_module, groups)
