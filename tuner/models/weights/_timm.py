"""``weights=imagenet`` on a timm backbone: timm's own pretrained weights for that model (and tag),
found in Hugging Face's or torch hub's cache, normalised as their ``pretrained_cfg`` says."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tuner.models.registry import BackboneSpec
from tuner.models.timm_backbones import timm_model_name, timm_pretrained_file
from tuner.models.weights._source import WeightSource, register_weight_source
from tuner.models.weights._state_dict import load_state_into_trunk, read_state_file
from tuner.spec import IMAGENET_PREPROCESSING, Preprocessing


class TimmPretrained(WeightSource):
    """timm's pretrained weights of a ``timm/<model>`` backbone; claims ``imagenet`` for those backbones
    only (priority 1 over torchvision's source)."""

    def recognises(self, spec: BackboneSpec, value: str) -> bool:
        return value == "imagenet" and timm_model_name(spec.name) is not None

    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        return timm_pretrained_file(spec)

    def load(self, trunk: nn.Module, spec: BackboneSpec, value: str) -> None:
        path = timm_pretrained_file(spec, download=False)  # the driver fetched it, if it could be
        load_state_into_trunk(trunk, spec, read_state_file(path), path)

    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        return spec.pretrained_preprocessing or IMAGENET_PREPROCESSING


register_weight_source(TimmPretrained("timm-pretrained", "timm's pretrained weights of a timm/<model> backbone",
                                      form="imagenet", priority=1))
