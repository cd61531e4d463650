"""Any timm model as a medtune backbone: ``backbone=timm/<model name>``, e.g. ``timm/tf_efficientnet_lite0``,
optionally with timm's pretrained tag (``timm/resnet18.a1_in1k``), which picks whose weights
``weights=imagenet`` means and whose preprocessing they bring.

A timm backbone is declared on first use and cached (``get_backbone`` resolves the ``timm/`` family here):

- The trunk is ``timm.create_model(name, pretrained=False, num_classes=0)``: timm's own pooled features,
  ``head_hidden_size`` long (``num_features`` unless timm puts layers after the pooling, as MobileNetV3
  does), which medtune's heads consume as they do a torchvision trunk's.
- The ``stages`` layer groups are the model's own ``group_matcher(coarse=True)``, the grouping timm
  uses for layer-wise learning-rate decay: only groups with parameters (by construction), stem first.
  medtune's groups are module paths, so each timm group becomes the largest modules all of whose
  parameters lie in it; every trunk parameter must then be covered exactly once, and a model that
  keeps a group's parameters directly on a module shared with other groups (a ViT's ``cls_token`` on
  the model itself) is refused rather than grouped approximately.
- ``min_image_size`` is the input size a fixed-size model insists on, else the larger of timm's
  ``min_input_size`` and the network's total stride (at that size the last stage's maps are 1x1),
  checked by one forward pass at that size. A fixed-size model (Swin, LeViT) accepts that size only:
  timm itself refuses any other at the first batch.
- ``pretrained_preprocessing`` is the ``pretrained_cfg``'s mean, std, interpolation and crop_pct, and
  ``timm_pretrained_file`` finds those weights in Hugging Face's or torch hub's cache.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache, partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from tuner._torchvision import torchvision  # noqa: F401  (timm imports torchvision; this import must run first)

# isort: split
import timm
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from timm.models import group_parameters

from tuner.errors import ConfigError
from tuner.models.registry import DEFAULT_GROUPING, BackboneSpec, LayerGroups
from tuner.spec import Preprocessing, did_you_mean

TIMM_PREFIX = "timm/"
FAMILY_DOC = "any timm model, as timm/<model name> (see timm.list_models())"
# The file names timm itself tries on the Hugging Face hub, in its order of preference.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULT_STRIDE = 32


def timm_model_name(backbone: str) -> str | None:
    """The timm model name of a ``timm/<name>`` backbone (tag included), None for any other backbone."""
    return backbone[len(TIMM_PREFIX):] if backbone.startswith(TIMM_PREFIX) else None


@cache
def timm_backbone(backbone: str) -> BackboneSpec:
    """The BackboneSpec of ``timm/<name>``, built once per process (it instantiates the model once to
    read its layer groups); an unknown name is refused with the closest timm model name."""
    name = _checked_model_name(backbone)
    model = _create(name, num_classes=0)
    cfg = model.pretrained_cfg
    return BackboneSpec(
        name=backbone, build=partial(_build_trunk, name), imagenet_weights=None,
        feature_dim=int(getattr(model, "head_hidden_size", model.num_features)),
        classifier_attr=_classifier_attr(model, cfg, backbone),
        groupings={DEFAULT_GROUPING: timm_layer_groups(model, backbone)},
        min_image_size=_min_image_size(model, cfg),
        pretrained_preprocessing=_preprocessing(cfg, name),
    )


def build_full_timm_model(spec: BackboneSpec) -> nn.Module:
    """The model with its pretrained classifier in place (``pretrained_cfg``'s number of classes), whose
    state dict is what a file of that model's weights holds; for ``medtune weights import``."""
    return _create(timm_model_name(spec.name), num_classes=None)


def timm_layer_groups(model: nn.Module, label: str) -> LayerGroups:
    """``model.group_matcher(coarse=True)``'s groups as module paths, checked to cover every parameter once."""
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        raise ConfigError(f"backbone {label}: this timm model declares no layer groups (no group_matcher), so "
                          "medtune cannot freeze or unfreeze it by group. Choose another timm model.")
    group_of = {p: gid for gid, names in group_parameters(model, matcher(coarse=True)).items() for p in names}
    params = dict(model.named_parameters())
    first = next(iter(params))
    if group_of[first] != min(group_of.values()):
        raise ConfigError(f"backbone {label}: timm's first layer group does not hold the first parameter "
                          f"{first!r} (the stem); medtune's groups must run stem first.")
    paths = _covering_modules(model, group_of)
    _check_coverage(model, paths, group_of, params, label)
    ordered = [tuple(paths[gid]) for gid in sorted(paths)]
    names = ["stem", *(_group_name(group) for group in ordered[1:])]
    return LayerGroups(tuple(names), tuple(ordered))


def timm_pretrained_file(spec: BackboneSpec, *, download: bool = True) -> Path:
    """The file of the timm backbone's pretrained weights (what ``weights=imagenet`` means for it).

    Looked up where timm itself caches them: the Hugging Face hub cache (``$HF_HOME/hub``; the
    ``pretrained_cfg``'s ``hf_hub_id``), then torch hub's ``checkpoints/`` folder (its ``url``). Not found,
    it is downloaded through the hub when ``download``, once, on the driver; failing that a
    ConfigError names the file and where to put it. The file may be safetensors (``read_state_file``
    in ``tuner.models.convert`` reads both formats)."""
    name = timm_model_name(spec.name)
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"timm publishes no pretrained weights for {spec.name}; use weights=none, or a "
                          "timm model with pretrained weights (timm.list_pretrained()).")
    hub_files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
    url_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name if cfg.url else None
    for filename in hub_files if cfg.hf_hub_id else ():
        cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    if url_file is not None and url_file.is_file():
        return url_file
    reason = "downloading is off"
    if download and cfg.hf_hub_id:
        try:
            return Path(hf_hub_download(cfg.hf_hub_id, hub_files[0]))
        except OSError as error:  # the hub's HTTP and offline errors are OSErrors
            reason = f"cannot be downloaded: {type(error).__name__}"
    places = []
    if cfg.hf_hub_id:
        places.append(f"{hub_files[0]} of https://huggingface.co/{cfg.hf_hub_id} into the Hugging Face cache "
                      f"(`hf download {cfg.hf_hub_id} {hub_files[0]}` where there is network, then copy "
                      "$HF_HOME/hub)")
    if url_file is not None:
        places.append(f"{url_file.name} (from {cfg.url}) into {url_file.parent} (or set $TORCH_HOME)")
    raise ConfigError(f"timm's pretrained weights for {spec.name} ({cfg.architecture}.{cfg.tag}) are not cached "
                      f"and {reason}. Put {', or '.join(places)}.")


def _checked_model_name(backbone: str) -> str:
    """The timm name in ``backbone``, refused (with the closest match) unless timm has that model and tag."""
    name = timm_model_name(backbone) or ""
    architecture, _, tag = name.partition(".")
    if not architecture or not timm.is_model(architecture):
        known = [TIMM_PREFIX + model for model in timm.list_models()]
        raise ConfigError(f"unknown timm model in backbone={backbone!r}.{did_you_mean(backbone, known)} Use "
                          "timm/<name> with a name from timm.list_models().")
    tagged = timm.list_pretrained(f"{architecture}.*")
    if tag and name not in tagged:
        choices = ", ".join(TIMM_PREFIX + t for t in tagged) or f"{TIMM_PREFIX}{architecture} (it has no tags)"
        raise ConfigError(f"timm has no pretrained tag {tag!r} for {architecture} (backbone={backbone!r}). "
                          f"Use one of {choices}.")
    return name


def _create(name: str, *, num_classes: int | None) -> nn.Module:
    """A randomly initialised timm model; ``num_classes=None`` keeps the pretrained classifier's size."""
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=False, **kwargs)


def _build_trunk(name: str, *, weights: None = None) -> nn.Module:
    """BackboneSpec.build for timm: the pooled-feature trunk; medtune loads any weights itself."""
    if weights is not None:
        raise ValueError("timm trunks are built without weights; tuner.models.weights loads them")
    return _create(name, num_classes=0)


def _classifier_attr(model: nn.Module, cfg: dict[str, Any], label: str) -> str:
    """The module path of the pretrained classifier, shortened to what exists in the trunk (with
    ``num_classes=0`` timm may drop it to an Identity higher up); it must hold no trunk parameter,
    since the classifier build replaces it with an Identity and a weights file's tensors under it are ignored."""
    path = cfg.get("classifier") or "classifier"
    path = path[0] if isinstance(path, (tuple, list)) else path
    parts = path.split(".")
    while parts:
        try:
            module = model.get_submodule(".".join(parts))
        except AttributeError:
            parts.pop()
            continue
        if any(True for _ in module.parameters()):
            raise ConfigError(f"backbone {label}: timm's classifier {path!r} still holds trunk parameters with "
                              "num_classes=0; medtune cannot separate the head from the trunk.")
        return ".".join(parts)
    raise ConfigError(f"backbone {label}: timm's classifier {path!r} is not a module of the model.")


def _min_image_size(model: nn.Module, cfg: dict[str, Any]) -> int:
    """The smallest input the trunk takes: a fixed-size model's input size; else the larger of timm's
    ``min_input_size`` and the network's total stride, doubled until one forward pass at that size runs
    (valid-padding stems such as Inception-v3's need more than their stride)."""
    full = int(cfg["input_size"][-1])
    if cfg.get("fixed_input_size"):
        return full
    info = getattr(model, "feature_info", None) or []
    size = max(max((int(stage["reduction"]) for stage in info), default=DEFAULT_STRIDE),
               int(cfg["min_input_size"][-1]) if cfg.get("min_input_size") else 0)
    model.eval()
    while True:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return size
        except RuntimeError:
            if size >= full:
                raise
            size = min(2 * size, full)


def _preprocessing(cfg: dict[str, Any], name: str) -> Preprocessing | None:
    """What the pretrained weights expect, from timm's pretrained_cfg; None where timm has no weights."""
    if not (cfg.get("hf_hub_id") or cfg.get("url")):
        return None
    return Preprocessing(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                         interpolation=cfg.get("interpolation") or "bilinear", crop_pct=cfg.get("crop_pct"),
                         source=f"timm pretrained_cfg of {cfg.get('architecture', name)}.{cfg.get('tag', '')}")


def _covering_modules(model: nn.Module, group_of: dict[str, int]) -> dict[int, list[str]]:
    """Per group, the largest modules (in registration order) all of whose parameters lie in that group."""
    groups_under: dict[str, set[int]] = defaultdict(set)
    for param, gid in group_of.items():
        parts = param.split(".")[:-1]
        for depth in range(len(parts) + 1):
            groups_under[".".join(parts[:depth])].add(gid)
    paths: dict[int, list[str]] = {gid: [] for gid in sorted(set(group_of.values()))}
    for path, _ in model.named_modules():
        groups = groups_under.get(path)
        if groups is None or len(groups) != 1:
            continue
        if path and groups_under[path.rpartition(".")[0]] == groups:
            continue  # its parent module is in the group already
        paths[next(iter(groups))].append(path)
    return paths


def _check_coverage(model: nn.Module, paths: dict[int, list[str]], group_of: dict[str, int],
                    params: dict[str, nn.Parameter], label: str) -> None:
    """Refuse module paths that miss a parameter, cover one twice, or put one in the wrong group."""
    covered: dict[str, list[int]] = defaultdict(list)
    for gid, group_paths in paths.items():
        for path in group_paths:
            for param, _ in model.get_submodule(path).named_parameters(prefix=path):
                covered[param].append(gid)
    missing = [p for p in params if p not in covered]
    if missing:
        raise ConfigError(f"backbone {label}: parameters {', '.join(missing[:4])} sit directly on a module whose "
                          "other parameters belong to other timm layer groups (medtune's layer groups are module "
                          "paths), so the groups cannot be frozen exactly. Choose another timm model.")
    wrong = [p for p, gids in covered.items() if gids != [group_of[p]]]
    if wrong:
        raise ConfigError(f"backbone {label}: the module paths of timm's layer groups cover {', '.join(wrong[:4])} "
                          "more than once or in the wrong group.")


def _group_name(paths: tuple[str, ...]) -> str:
    """A readable name for a group of module paths (``blocks.3``, ``blocks.6+conv_head+bn2``)."""
    return "+".join(paths) if len(paths) <= 3 else f"{paths[0]}..{paths[-1]}"
