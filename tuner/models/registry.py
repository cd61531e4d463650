"""The backbone registry. Each backbone declares, in one place, how to build it, its ImageNet weights,
and its ordered layer groups; everything that freezes or unfreezes layers consumes that declaration.

A layer group is a tuple of module paths in the torchvision model. Groups hold only modules that
have parameters (a pooling layer is never a group, so "unfreeze the top group" always unfreezes
weights), run stem to last stage, and together cover every trunk parameter exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import get_close_matches

from torch import nn

from tuner.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone and how it divides into layer groups."""

    name: str
    build: Callable[..., nn.Module]  # torchvision builder, called with weights=None
    imagenet_weights: object  # the torchvision weights enum member medtune calls "imagenet"
    feature_dim: int  # length of the pooled feature vector the head receives
    classifier_attr: str  # the torchvision classifier module that the head replaces
    groups: tuple[tuple[str, ...], ...]  # module paths, stem first
    group_names: tuple[str, ...]
    # Prefix rewrites for state dicts saved by other code (e.g. RadImageNet's PyTorch files).
    foreign_prefixes: dict[str, str] = field(default_factory=dict)
    radimagenet_file: str | None = None  # file name in RadImageNet's PyTorch release, if any
    min_image_size: int = 16  # smaller inputs shrink to nothing before the last stage

    @property
    def num_groups(self) -> int:
        return len(self.groups)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if len(spec.groups) != len(spec.group_names):
        raise ValueError(f"{spec.name}: {len(spec.groups)} groups but {len(spec.group_names)} names")
    _REGISTRY[spec.name] = spec
    return spec


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r}. Known backbones: {', '.join(backbone_names())}.{hint}") from None
