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

from torch import nn

from tuner.errors import ConfigError
from tuner.spec import Preprocessing, unknown_name

DEFAULT_GROUPING = "stages"


@dataclass(frozen=True)
class LayerGroups:
    """One grouping of a trunk: each group's name and module paths, stem first (see the module docstring);
    the unit that strategies freeze and unfreeze."""

    names: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.paths):
            raise ValueError(f"{len(self.paths)} layer groups but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone (a torchvision model, or any timm model through
    ``tuner.models.timm_backbones``) and how it divides into layer groups."""

    name: str
    build: Callable[..., nn.Module]  # the model builder (torchvision's, or timm's trunk), called with weights=None
    imagenet_weights: object | None  # the torchvision weights enum member medtune calls "imagenet", if any
    feature_dim: int  # length of the feature vector the head receives
    classifier_attr: str  # path of the model's classifier module, which the head replaces
    groupings: Mapping[str, LayerGroups]
    # Prefix rewrites for state dicts saved by other code (e.g. RadImageNet's PyTorch files).
    foreign_prefixes: dict[str, str] = field(default_factory=dict)
    radimagenet_file: str | None = None  # file name in RadImageNet's PyTorch release, if any
    min_image_size: int = 16  # smaller inputs shrink to nothing before the last stage
    # Where imagenet_weights is None: the backbone of the same family that has them (named in errors).
    imagenet_alternative: str | None = None
    # What the backbone's own pretrained weights expect, where the backbone declares it (timm's
    # pretrained_cfg); weight sources read it instead of assuming ImageNet's mean and std.
    pretrained_preprocessing: Preprocessing | None = None

    def layer_groups(self, grouping: str = DEFAULT_GROUPING) -> LayerGroups:
        """The named grouping (``stages`` by default), refused with the groupings this backbone has."""
        try:
            return self.groupings[grouping]
        except KeyError:
            raise ConfigError(f"backbone {self.name} has no {grouping!r} layer grouping; it has "
                              f"{', '.join(sorted(self.groupings))}.") from None

    @property
    def num_groups(self) -> int:
        """How many groups the default grouping has (the range of ``unfreeze``)."""
        return len(self.layer_groups())


_REGISTRY: dict[str, BackboneSpec] = {}
# Backbones declared on demand: a name starting with the prefix is resolved by the family's function
# (``timm/<model>``: tuner.models.timm_backbones), with a line for the unknown-name message.
_FAMILIES: dict[str, tuple[Callable[[str], BackboneSpec], str]] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Declare a backbone; its ``stages`` grouping is required, since it is the default every strategy uses."""
    if DEFAULT_GROUPING not in spec.groupings:
        raise ValueError(f"{spec.name}: every backbone declares a {DEFAULT_GROUPING!r} grouping")
    _REGISTRY[spec.name] = spec
    return spec


def backbone_names() -> list[str]:
    """The registered backbones' names (timm's are resolved on demand and not listed)."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """The backbone called ``name``; an unknown name is refused with the closest match and every choice."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    for prefix, (resolve, _) in _FAMILIES.items():
        if isinstance(name, str) and name.startswith(prefix):
            return resolve(name)
    error = unknown_name("backbone", name, _REGISTRY)
    families = " ".join(f"Also {doc}." for _, doc in _FAMILIES.values())
    raise ConfigError(f"{error} {families}".strip()) from None


def register_backbone_family(prefix: str, resolve: Callable[[str], BackboneSpec], doc: str) -> None:
    """Make every backbone name starting with ``prefix`` resolve through ``resolve(name)`` (which caches
    and validates its specs): a library of hundreds of models is not declared one by one. ``doc`` is the
    line the unknown-backbone message adds (e.g. ``any timm model, as timm/<model name>``)."""
    _FAMILIES[prefix] = (resolve, doc)
