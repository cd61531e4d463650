"""The backbone registry. Each backbone declares, in one place, how to build it, its ImageNet weights,
and its ordered layer groups; everything that freezes or unfreezes layers consumes that declaration.

A layer group is a tuple of module paths in the torchvision model. Every group holds parameters (a
pooling layer is never a group on its own, so "unfreeze the top group" always unfreezes weights), groups
run stem to last stage, and together they cover every trunk parameter exactly once. A group may also
list parameter-free modules (a dropout between two linear layers) so that they, too, go quiet when the
group is frozen.

A backbone can declare more than one grouping: ``stages`` (the default, comparable across families)
and, for the architectures of the fine-tuning-strategies paper, ``paper`` (that paper's blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches

from torch import nn

from tuner.errors import ConfigError

DEFAULT_GROUPING = "stages"


@dataclass(frozen=True)
class LayerGroups:
    names: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.paths):
            raise ValueError(f"{len(self.paths)} layer groups but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone and how it divides into layer groups."""

    name: str
    build: Callable[..., nn.Module]  # torchvision builder, called with weights=None
    imagenet_weights: object | None  # the torchvision weights enum member medtune calls "imagenet", if any
    feature_dim: int  # length of the feature vector the head receives
    classifier_attr: str  # path of the torchvision module that the head replaces
    groupings: Mapping[str, LayerGroups]
    # Prefix rewrites for state dicts saved by other code (e.g. RadImageNet's PyTorch files).
    foreign_prefixes: dict[str, str] = field(default_factory=dict)
    radimagenet_file: str | None = None  # file name in RadImageNet's PyTorch release, if any
    min_image_size: int = 16  # smaller inputs shrink to nothing before the last stage
    # Where imagenet_weights is None: the backbone of the same family that has them (named in errors).
    imagenet_alternative: str | None = None

    def layer_groups(self, grouping: str = DEFAULT_GROUPING) -> LayerGroups:
        try:
            return self.groupings[grouping]
        except KeyError:
            raise ConfigError(f"backbone {self.name} has no {grouping!r} layer grouping; it has "
                              f"{', '.join(sorted(self.groupings))}.") from None

    @property
    def num_groups(self) -> int:
        return len(self.layer_groups())


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if DEFAULT_GROUPING not in spec.groupings:
        raise ValueError(f"{spec.name}: every backbone declares a {DEFAULT_GROUPING!r} grouping")
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
        known = ", ".join(backbone_names())
        raise ConfigError(f"unknown backbone {name!r}. Known backbones: {known}.{hint}") from None
