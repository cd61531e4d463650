"""Models: the backbone registry, classifier heads, starting weights, and the classifier."""

from tuner.models import backbones as _backbones  # noqa: F401  (registers the shipped backbones)
from tuner.models.classifier import Classifier, build_classifier
from tuner.models.heads import HEADS, HeadSpec, build_head
from tuner.models.registry import BackboneSpec, backbone_names, get_backbone, register_backbone

__all__ = ["HEADS", "BackboneSpec", "Classifier", "HeadSpec", "backbone_names", "build_classifier", "build_head",
           "get_backbone", "register_backbone"]
